"""Export: ONNX encoders and item tower, the tokenizer file, the model bundle, and its verification."""
