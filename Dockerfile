# The training image: what every kbench pod runs (`python -m kbench.jobs.launch ...`).
#   docker build -t registry.example/kbench:0.1.0 . && docker push registry.example/kbench:0.1.0
# The base carries CUDA and the torch that kbench pins (torch==2.14.1); override it with
# --build-arg BASE_IMAGE=... to match your drivers.
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime
FROM ${BASE_IMAGE}

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
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['train']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then kbench itself, without touching the dependencies again.
COPY README.md ./
COPY core ./core
COPY cli ./cli
COPY jobs ./jobs
COPY k8s ./k8s
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import kbench.jobs.launch, kbench.jobs.train" \
    && command -v torchrun

# A non-root user whose uid matches the pods' securityContext (runAsUser: 1000); /scratch is
# where the pods mount their scratch volume (dataset cache, checkpoints in transit).
RUN useradd --uid 1000 --create-home --home-dir /home/kbench kbench \
    && mkdir -p /scratch \
    && chown kbench:kbench /scratch
USER 1000
WORKDIR /scratch

CMD ["python", "-m", "kbench.jobs.launch", "--help"]
