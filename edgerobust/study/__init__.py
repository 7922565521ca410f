"""Studies (``edgerobust run``): expand a study into a DAG of stages and run what is not done yet.

Each :class:`Stage` is a kind (``synthetic``, ``train``, ``prune``, ``distill``, ``quantize``,
``export``, ``eval-device``, ``attack`` (white-box, on checkpoints), ``saltpepper`` (black-box, on
artifacts)), its settings, and the stages it reads from. Its key
is ``sha256(kind, adapter version, canonical JSON settings, keys of its dependencies)``, so
changing one setting changes the key of that stage and of everything downstream of it, and
nothing else.

Storage (``OUT`` is the study's output folder)::

    OUT/stages/<kind>-<key12>/     everything one stage makes (checkpoint, artifact, records)
    OUT/stages/<kind>-<key12>/done.json   written last, atomically: the stage is finished
    OUT/study.log                  every stage's log lines, timings, and tracebacks of failures
    OUT/summary.json               what ran, what was cached, what failed and why

A stage is cached when its ``done.json`` exists. A stage writes at its final path, because its
files name each other by path (an int8 checkpoint's spec names its fp32 parent, a manifest its
source checkpoint); the folder carries an ``.incomplete`` marker until ``done.json`` is written,
and reports skip records under such folders. Every file inside is itself written atomically
(temporary name, then ``os.replace``). So a run killed at any moment (even ``kill -9``) loses at
most the stage in flight: the next run clears that folder and does it again (``train``
resumes from its last finished epoch instead). A failed stage is recorded with its one-line
reason; the stages that depend on it are skipped, everything else still runs.

Stage kinds are a registry of small adapters (:mod:`edgerobust.study.stages`): ``kind ->
function(settings, inputs, out_dir, reporter) -> record path``.
"""

# Registration: the built-in compressions plan with the study's own types, so they live here (the
# study layer) and register into edgerobust.compress.registry when the package is imported.
from edgerobust.study import compressions as _compressions  # noqa: E402,F401
