# scalelab image for Ray head and worker nodes (docker-compose.yml, KubeRay, ...).
# The base image carries Python 3.11, Ray 2.60.0 and the CUDA runtime; it runs as user
# `ray` (home /home/ray) with no entrypoint of its own.
FROM rayproject/ray:2.60.0-py311-gpu

# torch comes from PyPI by default: its Linux x86_64 wheels are CUDA builds that bundle
# their CUDA libraries (the host needs only the NVIDIA driver). To pick a CUDA flavour, pass
# e.g. --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_INDEX_URL=""

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    SCALELAB_CHECKPOINT_DIR=/scalelab/checkpoints

WORKDIR /home/ray/scalelab

# Dependency layer first (rebuilt only when pyproject.toml changes), from the project's own
# ranges. Ray stays the base image's 2.60.0. SQLAlchemy>=2.1 so that `postgresql://` URIs
# use psycopg 3 (installed); 2.0 would look for psycopg2.
COPY --chown=ray:users pyproject.toml docker/requirements_from_pyproject.py ./
RUN python requirements_from_pyproject.py --only torch > /tmp/torch.txt \
 && python requirements_from_pyproject.py --exclude torch > /tmp/requirements.txt \
 && if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --index-url "$TORCH_INDEX_URL" -r /tmp/torch.txt; \
    else \
        pip install -r /tmp/torch.txt; \
    fi \
 && pip install -r /tmp/requirements.txt "ray[default]==2.60.0" "SQLAlchemy>=2.1" \
 && rm -f /tmp/torch.txt /tmp/requirements.txt requirements_from_pyproject.py

# Shared checkpoint volume mount point, owned by `ray` so that a fresh named volume is too.
USER root
RUN mkdir -p /scalelab/checkpoints && chown -R ray:users /scalelab
USER ray

# The project itself (see .dockerignore), installed editable: `ray job submit --working-dir .`
# still ships the host's current code, which then comes first on sys.path.
COPY --chown=ray:users . .
RUN pip install --no-deps -e . && rm -rf build

ENTRYPOINT ["bash", "/home/ray/scalelab/docker/ray-node.sh"]
CMD ["bash"]
