"""The CLIPER recommendation service: FastAPI + ONNX Runtime + FAISS + Redis, from a model bundle."""
