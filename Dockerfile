# The image the Kubeflow pipeline's components run in (`runner.py compile --image`).
#   docker build -t REGISTRY/tfx-servables:TAG .
#   docker push REGISTRY/tfx-servables:TAG
# Every task runs
#   python -m pipeline.kfp_entrypoint ARGS
# which runs TFX's KFP v2 entrypoint (tfx.orchestration.kubeflow.v2.container.
# kubeflow_v2_run_executor) and exits with its code (see pipeline/kfp_entrypoint.py);
# the executors import `components.*` and the servable modules from /app
# (`runner.py compile --project-dir-in-image`, default /app).
# Buckets: gs:// is built into TensorFlow; s3:// comes from tensorflow-io (in the
# lock, imported by the components when a path is s3://). Give the tasks S3
# settings at run time, not in the image: S3_ENDPOINT (unset = AWS; e.g.
# http://minio-service.kubeflow:9000), S3_USE_HTTPS, S3_VERIFY_SSL, AWS_REGION and
# credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from a secret, or the
# cluster's IAM role).
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
# stand-in hub module, built once into the image, and a check that TensorFlow
# has the s3:// filesystem.
RUN pip install --no-deps --no-build-isolation -e . \
    && python -c "from servables.hub_standin import ensure_standin; ensure_standin()" \
    && python -c "import tensorflow as tf, tensorflow_io; \
                  assert 's3' in tf.io.gfile.get_registered_schemes(), 'no s3:// filesystem'"
