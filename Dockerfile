FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgmp-dev gcc && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY compute compute
COPY service service
COPY bridge bridge
COPY cli cli
RUN pip install --no-cache-dir .
ENV PYTHONUNBUFFERED=1
CMD ["amarvote", "--help"]
