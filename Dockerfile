# syntax=docker/dockerfile:1
# Confidant: one image for the five services. The entry point is `python -m`; each Kubernetes
# Deployment names its service in its args (services.auth, services.messaging, services.consent,
# services.notify, services.web), and `docker run IMAGE` alone starts the web edge.
#
#   docker build -t confidant:$(git rev-parse --short HEAD) .
#
# Both stages use the same base, pinned to an exact Python patch release on an exact Debian
# release (a release pipeline may pin it further by digest: python:3.11.14-slim-bookworm@sha256:...).
# tests/deploy/test_dockerfile.py checks the rules this file keeps.

# ---- build: the dependencies into a venv, the protobuf code generated -------------------------
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
SHELL ["/bin/bash", "-eu", "-o", "pipefail", "-c"]
WORKDIR /build
COPY pyproject.toml requirements.lock ./
# pyproject.toml's runtime dependencies at requirements.lock's exact versions (the lock also pins
# the test tools: pytest, moto, playwright ..., which stay out of the image). Wheels only, so no
# compiler is needed even here. grpcio-tools only generates code: it gets a throwaway venv.
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if d != 'grpcio-tools'))" > runtime.txt \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: -c requirements.lock -r runtime.txt \
 && python -m venv /opt/protoc \
 && /opt/protoc/bin/pip install --no-cache-dir --only-binary=:all: -c requirements.lock grpcio-tools
COPY protos/ protos/
RUN mkdir -p /app/gen \
 && find protos -name '*.proto' -exec \
    /opt/protoc/bin/python -m grpc_tools.protoc -Iprotos --python_out=/app/gen --grpc_python_out=/app/gen {} +
COPY services/ /app/services/
# The code and the generated modules are importable from the venv (as the Makefile does for .venv);
# bytecode is compiled now because the root filesystem is read-only at run time; pip leaves the venv.
RUN printf '/app\n/app/gen\n' > "$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/confidant-src.pth" \
 && /opt/venv/bin/python -m compileall -q /app \
 && /opt/venv/bin/python -m pip uninstall --yes --quiet pip setuptools

# ---- runtime: the interpreter, the venv and the code; no compiler, no package manager use ------
FROM python:3.11.14-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="confidant" \
      org.opencontainers.image.description="Confidant services: python -m services.<auth|messaging|consent|notify|web>"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# A fixed numeric user (Kubernetes' runAsNonRoot checks a number), and no pip in the image.
RUN groupadd --system --gid 10001 confidant \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin confidant \
 && python -m pip uninstall --yes --quiet pip setuptools wheel
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
USER 10001:10001
# gRPC: auth 50051, messaging 50052, consent 50053, notify 50054; web 8080; metrics 9464.
EXPOSE 50051 50052 50053 50054 8080 9464
# Kubernetes probes the services (gRPC health, /healthz and /readyz); one image serves five
# services, so there is no single HEALTHCHECK command to give.
HEALTHCHECK NONE
ENTRYPOINT ["python", "-m"]
CMD ["services.web"]
