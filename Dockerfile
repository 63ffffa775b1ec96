# Sentinel dashboard image: slim Python, CPU PyTorch by default, runs as a non-root user on port 8501.
#   docker build -t sentinel .
#   docker run -p 8501:8501 -v sentinel-data:/data sentinel
# CUDA build: pick the PyTorch wheel index of your CUDA version, e.g.
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t sentinel:cuda .
#   docker run --gpus all -p 8501:8501 -v sentinel-data:/data sentinel:cuda
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

# Where the torch wheel comes from: .../whl/cpu (default) or a CUDA index such as .../whl/cu128.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SENTINEL_HOME=/data \
    HF_HOME=/data/huggingface

RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin sentinel \
    && mkdir -p /data /app \
    && chown sentinel:sentinel /data /app

WORKDIR /app

# Dependencies first, so code edits do not reinstall them: torch from the chosen index, the rest from PyPI.
COPY requirements.txt ./
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && pip install -r requirements.txt

COPY --chown=sentinel:sentinel . .
# Editable, so the package resolves assets/models/ next to app.py (the bundled model) and `sentinel` is on PATH.
RUN pip install --no-deps -e .

USER sentinel
VOLUME ["/data"]
EXPOSE 8501

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).status == 200 else 1)"

CMD ["streamlit", "run", "app.py", "--server.port=8501", "--server.address=0.0.0.0"]
