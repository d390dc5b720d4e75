"""PyTorch SSD300: model, batched targets, loss, post-processing, data, training and evaluation."""
