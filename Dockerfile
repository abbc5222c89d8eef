# The one image of kgm: the controller (kgm serve), the node agent (kgm agent) and the kgm-certs Job.
#
#   docker build -t registry.example.com/kgm/k8s-gpu-management:0.1.0 .
#   cd manifests && kustomize edit set image \
#       ghcr.io/kgm/k8s-gpu-management=registry.example.com/kgm/k8s-gpu-management:0.1.0
#
# tests/manifests/test_dockerfile.py holds this file to the manifests (user, port, commands, image).

# Pinned to the patch release: a rebuild gets the same interpreter. Bump it on purpose (with its digest,
# python:3.11.14-slim-bookworm@sha256:..., where your registry policy asks for one).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- builder: the wheel of this project, then a virtualenv with it and its dependencies --------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kgm ./kgm
COPY webhook ./webhook
COPY extender ./extender
COPY inventory ./inventory
# The extras: grpcio for the agent's kubelet PodResources client, psycopg for a PostgreSQL ledger, PyJWT
# for --api-auth oidc (every install way the manifests offer must run on this one image). Every
# dependency ships manylinux wheels, so nothing is compiled here either. Bytecode is compiled now: the
# containers run with a read-only root filesystem.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/kgm \
 && wheel="$(echo /wheels/k8s_gpu_management-*.whl)" \
 && /opt/kgm/bin/pip install "${wheel}[agent,postgres,oidc]" \
 && /opt/kgm/bin/pip uninstall --yes pip \
 && /opt/kgm/bin/python -m compileall -q /opt/kgm/lib

# ---- the image: the interpreter and the virtualenv; no compiler, no pip, no build tree -----------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="k8s-gpu-management" \
      org.opencontainers.image.description="kgm: MIG-aware admission webhook, scheduler extender, NVML inventory, cost ledger" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# The uid/gid the manifests run as (runAsUser/runAsGroup 65532, the distroless "nonroot" convention).
# Numeric in USER so that the kubelet can check runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 65532 kgm \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin kgm
COPY --from=builder /opt/kgm /opt/kgm
# The virtualenv first: `kgm` and the `python` the kgm-certs Job runs (with kubernetes and cryptography).
ENV PATH=/opt/kgm/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
# kgm serve: the webhook, the extender, the REST API, /healthz, /readyz and /metrics, all over HTTPS.
EXPOSE 8443
ENTRYPOINT ["kgm"]
CMD ["--help"]
