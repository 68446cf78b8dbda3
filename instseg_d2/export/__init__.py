"""Deployment: export a trained Mask R-CNN to TorchScript or ONNX, proved equal to the eager model.

- :mod:`.resize`, :mod:`.paste`: Detectron2's test-time resize and mask pasting as traceable
  torch ops (equal to Detectron2's up to float rounding).
- :mod:`.deployable`: image in, detections out, as Detectron2's ``TracingAdapter`` traces it.
- :mod:`.exporter`: trace, write, load back and check parity (:mod:`.parity`), write
  ``metadata.json`` (:mod:`.metadata`); :mod:`.onnx_ops` fixes what the ONNX exporter gets wrong.
- :mod:`.runtime`: the dependency-light loader shipped next to each artifact (torch or
  onnxruntime, no Detectron2).
- :mod:`.predictor`: an exported model behind ``BatchPredictor``'s interface, for
  ``instseg_d2.engine.inference`` (drawings and ``predictions.json`` as ``tools/infer.py``).

Layers: this package uses ``engine`` (``BatchPredictor``, the inference writers) and lower
layers; only tools and benchmarks import it.
"""
