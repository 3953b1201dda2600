# mulde on an official PyTorch CUDA runtime image.
#   docker build -t mulde .
#   docker run --gpus all -v /path/to/datasets:/data -v mulde-cache:/cache mulde \
#       extract --dataset ped2 --root /data/ped2
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

# OpenCV needs these shared libraries at import time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 mulde
WORKDIR /opt/mulde
COPY pyproject.toml README.md ./
COPY mulde ./mulde
RUN pip install --no-cache-dir "./[ray]" \
    && mkdir -p /data /cache \
    && chown mulde:mulde /data /cache

# Features, weights and hub caches all live on the /cache volume, so a container that ran
# `vad weights download --all` once can run offline afterwards.
ENV MULDE_CACHE=/cache \
    TORCH_HOME=/cache/torch \
    HF_HOME=/cache/huggingface \
    YOLO_CONFIG_DIR=/cache/ultralytics \
    MPLBACKEND=Agg \
    PYTHONUNBUFFERED=1
VOLUME ["/data", "/cache"]
USER 1000:1000
WORKDIR /data
ENTRYPOINT ["vad"]
CMD ["--help"]
