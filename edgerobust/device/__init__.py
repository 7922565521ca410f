"""The device side, checked: run artifacts on an emulated Raspberry Pi and judge them here.

* :mod:`~edgerobust.device.emulation`: whether this host can emulate arm64, the cached Debian
  bookworm arm64 root, the wheels and venvs the README's Pi section installs, the image mirror;
* :mod:`~edgerobust.device.verdict`: when a device computes the same model (the rule and why);
* :mod:`~edgerobust.device.check`: ``edgerobust device-check`` itself.
"""
