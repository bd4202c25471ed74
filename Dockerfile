# syntax=docker/dockerfile:1

# Build stage: turn the project and its dependencies into wheels. Nothing
# from this stage except the wheels reaches the runtime image.
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY setup.py pyproject.toml README.md ./
COPY twisted_demo/ twisted_demo/
COPY twisted/ twisted/
RUN pip wheel --wheel-dir /wheels .


# Runtime stage: the slim interpreter, the installed wheels, no compilers.
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Install from the build stage's wheels only, then write Twisted's plugin
# cache (twisted/plugins/dropin.cache) now: at run time the root file system
# is read-only and twistd would otherwise try, and fail, to write it on
# every start.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/configmapdemo-*.whl \
    && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"

# Set after the install so that pip still precompiles the bytecode; at run
# time nothing is written, and logs leave unbuffered on stdout.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A numeric non-root user, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

EXPOSE 8080

# -n: stay in the foreground and log to stdout; --pidfile=: write no pid file.
ENTRYPOINT ["twistd", "-n", "--pidfile=", "configmapdemo"]
CMD ["--config", "/etc/config/configmap-microservice-demo.yaml"]
