FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY devices devices
COPY rules rules
COPY case_bridge case_bridge
COPY gateway gateway
COPY simulators simulators
COPY detectors detectors
COPY deploy deploy
RUN pip install --no-cache-dir .
# Not root: a flaw in a parser then cannot own the container. /data (and the replicas'
# shared evidence folder, /data/evidence) is made here, owned by that user, so that the
# named volumes mounted on it start with the same owner. A fixed uid, so a volume made
# elsewhere (an NFS export shared by replicas on several machines) can be owned in advance.
RUN useradd --system --uid 10001 --no-create-home --home-dir /data citygw \
    && mkdir -p /data/evidence && chown citygw /data /data/evidence
USER citygw
ENTRYPOINT ["citygw"]
