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
ENTRYPOINT ["citygw"]
