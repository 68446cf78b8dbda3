# GPU training image: CUDA/cuDNN PyTorch base, detectron2 compiled from source with its CUDA ops,
# the project installed by the same scripts/setup.sh as the README.
#   docker build -t instseg_d2 .
#   docker run --gpus all --shm-size=8g -v /path/to/datasets:/data instseg_d2 \
#       --config-file configs/PennFudan/mask_rcnn_R_50_FPN_3x.yaml --num-gpus 1
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-devel

ENV DEBIAN_FRONTEND=noninteractive
# git for the detectron2 source build; ninja speeds up its CUDA compile.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ninja-build ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 --shell /bin/bash instseg
USER 1000:1000
WORKDIR /home/instseg/instseg_d2

# Volta (7.0) through Hopper (9.0); +PTX lets newer GPUs JIT the kernels.
ENV FORCE_CUDA=1 \
    TORCH_CUDA_ARCH_LIST="7.0;7.5;8.0;8.6;8.9;9.0+PTX" \
    VENV=/home/instseg/venv \
    VENV_ARGS=--system-site-packages \
    TORCH_SPEC=keep \
    INSTSEG_D2_DETECTRON2_ROUTE=source \
    PIP_NO_CACHE_DIR=1

# The install script and project metadata first, so code edits do not rebuild detectron2.
COPY --chown=instseg:instseg pyproject.toml README.md ./
COPY --chown=instseg:instseg scripts/ scripts/
COPY --chown=instseg:instseg instseg_d2/ instseg_d2/
RUN bash scripts/setup.sh

COPY --chown=instseg:instseg . .

ENV PATH=/home/instseg/venv/bin:$PATH \
    DETECTRON2_DATASETS=/data
ENTRYPOINT ["python", "tools/train_net.py"]
CMD ["--help"]
