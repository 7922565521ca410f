"""edgerobust: compress image classifiers for edge devices and measure, inside the runtime that
will run them, how they survive domain shift and adversarial perturbations.

Importing this package is cheap and never imports torch: the device side (``edgerobust.runtimes``
and ``edgerobust eval-device``) runs where only numpy, pillow and onnxruntime are installed.
"""

__version__ = "0.1.0"
