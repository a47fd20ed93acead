# The image the Kubeflow pipeline's components run in (`runner.py compile --image`).
#   docker build -t REGISTRY/tfx-servables:TAG .
#   docker push REGISTRY/tfx-servables:TAG
# The TFX executors run as
#   python -m tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor
# and import `components.*` and the servable modules from /app.
FROM python:3.10-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 TFHUB_CACHE_DIR=/opt/tfhub-cache
WORKDIR /app

# Same lock as every other install: no resolver, exact versions.
COPY requirements.lock ./
RUN pip install --no-deps -r requirements.lock

COPY . .
RUN pip install --no-deps --no-build-isolation -e . \
    # Build the stand-in hub module once, into the image.
    && python -c "from servables.hub_standin import ensure_standin; ensure_standin()"
