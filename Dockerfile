# The image the Kubeflow pipeline's components run in (`runner.py compile --image`).
#   docker build -t REGISTRY/tfx-servables:TAG .
#   docker push REGISTRY/tfx-servables:TAG
# The TFX executors run as
#   python -m tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor
# and import `components.*` and the servable modules from /app
# (`runner.py compile --project-dir-in-image`, default /app).
# bookworm: glibc 2.36, the platform requirements.lock is resolved for.
FROM python:3.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 TFHUB_CACHE_DIR=/opt/tfhub-cache
WORKDIR /app

# Same lock as every other install: no resolver, exact versions. A few locked
# packages ship only as sources (pyfarmhash is C++), so a compiler is present
# while installing and removed in the same layer.
COPY requirements.lock ./
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && pip install --no-deps -r requirements.lock \
    && apt-get purge -y --auto-remove g++ \
    && rm -rf /var/lib/apt/lists/*

COPY . .
# The project itself (editable: the executors' base_dir is /app), then the
# stand-in hub module, built once into the image.
RUN pip install --no-deps --no-build-isolation -e . \
    && python -c "from servables.hub_standin import ensure_standin; ensure_standin()"
