"""Deployment: ONNX export of a checkpoint (the network, or a self-contained detector with its pre- and
post-processing in the graph; optionally INT8). Library code of ``ssd-export`` (docs/CONTRACT.md "Exported
detector"). Submodules: ``onnx_export`` (graphs, checks, files), ``graph_postprocess`` (post-processing as a
graph; its ranking key is ``ssd_torch.nms.class_log_scores``), ``quantize`` (INT8)."""
from ssd_torch.deploy.onnx_export import (INT8_MIN_OPSET, OPSET_RANGE, PIXEL_DTYPES, POSTPROCESS_MIN_OPSET,
                                          SIDECAR_FORMAT, check_export_options, check_onnx, check_postprocess,
                                          export_checkpoint, export_onnx, join_graphs, network_graph,
                                          pixel_input_model, postprocess_graph, sidecar_paths, trace_onnx)

__all__ = ["SIDECAR_FORMAT", "PIXEL_DTYPES", "OPSET_RANGE", "POSTPROCESS_MIN_OPSET", "INT8_MIN_OPSET",
           "check_export_options", "sidecar_paths", "pixel_input_model", "trace_onnx", "export_onnx",
           "network_graph", "postprocess_graph", "join_graphs", "check_onnx", "check_postprocess",
           "export_checkpoint"]
