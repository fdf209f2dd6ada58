# The image `stefaland submit --image` runs: CUDA runtime, torch, then this package.
#
#   docker build -t registry.example.org/stefaland:0.1.0 .
#   docker push registry.example.org/stefaland:0.1.0
#   stefaland submit pretrain --image registry.example.org/stefaland:0.1.0 ...
#
# Pick the CUDA/torch pair your cluster's driver supports with the build arguments, e.g.
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 \
#                --build-arg CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 .
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/stefaland \
    PATH=/opt/stefaland/bin:$PATH

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/stefaland

# torch first and on its own layer: by far the largest dependency and the one that changes least,
# so rebuilding after a code change reuses it. pyproject declares torch>=2.6, which this wheel
# satisfies, so `pip install .` keeps it (the CPU and CUDA wheels come from different indexes).
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY stefaland ./stefaland
COPY stefaland_cli ./stefaland_cli
RUN pip install ".[eo]" \
 && python -c "import torch, stefaland, stefaland.k8s.fold_entry; print('torch', torch.__version__)" \
 && stefaland --version \
 && rm -rf /src

# Catalogs are data, not code: kept beside the package so `--catalog /opt/catalog/camels.yaml` works.
COPY catalog /opt/catalog

# Run as an unprivileged user; HOME gives torch and fsspec a writable cache directory.
RUN useradd --create-home --uid 1000 stefaland
USER 1000
WORKDIR /home/stefaland

CMD ["stefaland", "--help"]
