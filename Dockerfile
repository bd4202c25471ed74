# syntax=docker/dockerfile:1

# Build stage: turn the project and its dependencies into wheels. Nothing
# from this stage except the wheels reaches the runtime image.
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY requirements/service.txt requirements/service.txt
RUN pip install --require-hashes -r requirements/service.txt
COPY setup.py pyproject.toml README.md ./
COPY twisted_demo/ twisted_demo/
COPY twisted/ twisted/
# The locked setuptools builds the wheel: nothing unlocked is fetched.
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .


# Runtime stage: the slim interpreter, the installed wheels, no compilers.
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Install the locked dependencies (checked by hash) and the project's wheel
# from the build stage, check them, write Twisted's plugin cache
# (twisted/plugins/dropin.cache) now, since at run time the root file system
# is read-only, and check that twistd finds the plugin.
# Twisted rewrites the cache whenever a plugin module is not older than it,
# and builders and registries may round file times to whole seconds, which
# can make a module and the cache written just after it equal. The modules
# are dated to the epoch first (their bytecode recompiled to match), so that
# the cache stays newer however the times are rounded; twistd would
# otherwise import every plugin and try, and fail, to write the cache at
# every start.
COPY requirements/service.txt /tmp/service.txt
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --require-hashes -r /tmp/service.txt \
    && pip install --no-deps /wheels/configmapdemo-*.whl \
    && rm /tmp/service.txt \
    && pip check \
    && plugins="$(python -c 'import os, twisted.plugins as p; print(os.path.dirname(p.__file__))')" \
    && touch --date=@0 "$plugins"/*.py \
    && python -m compileall -q "$plugins" \
    && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
    && twistd configmapdemo --help > /dev/null

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
