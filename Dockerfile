# The training image: what every kbench pod runs (`python -m kbench.jobs.launch ...`).
#   docker build -t registry.example/kbench:0.1.0 . && docker push registry.example/kbench:0.1.0
# The base carries CUDA and the torch that kbench pins (torch==2.14.1); override it with
# --build-arg BASE_IMAGE=... to match your drivers. On a base that brings its own build of
# torch (NGC's nvcr.io/nvidia/pytorch, whose version reads like 2.6.0a0+...nv25.01), add
# --build-arg KEEP_BASE_TORCH=1: the pins of torch and torchvision are left out, so pip keeps
# the base's builds instead of replacing them.
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime
FROM ${BASE_IMAGE}
ARG KEEP_BASE_TORCH=0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/kbench \
    TMPDIR=/scratch \
    HF_HOME=/scratch/huggingface \
    TORCH_HOME=/scratch/torch

WORKDIR /opt/kbench

# Dependencies first, read from pyproject.toml: this layer stays cached while sources change.
COPY pyproject.toml ./
RUN KEEP_BASE_TORCH=${KEEP_BASE_TORCH} python -c "import os, re, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; keep = os.environ['KEEP_BASE_TORCH'] == '1'; print('\n'.join(r for r in p['dependencies'] + p['optional-dependencies']['train'] if not (keep and re.match(r'(torch|torchvision)\b(?!_)', r))))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then kbench itself, without touching the dependencies again.
COPY README.md ./
COPY kbench ./kbench
COPY cli ./cli
COPY jobs ./jobs
COPY k8s ./k8s
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import kbench.jobs.launch, kbench.jobs.train" \
    && command -v torchrun

# A non-root user whose uid matches the pods' securityContext (runAsUser: 1000), unless the
# base has one already (Ubuntu 24.04 bases, NGC's among them, ship `ubuntu` as 1000); /scratch
# is where the pods mount their scratch volume (dataset cache, checkpoints in transit).
RUN (getent passwd 1000 >/dev/null || useradd --uid 1000 --no-create-home kbench) \
    && mkdir -p /scratch /home/kbench \
    && chown 1000:1000 /scratch /home/kbench
USER 1000
WORKDIR /scratch

CMD ["python", "-m", "kbench.jobs.launch", "--help"]
