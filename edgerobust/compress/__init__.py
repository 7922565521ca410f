"""Compressions behind one protocol, in one registry (light: no torch at import).

A compression (``prune``, ``distill``, ``quantize``) is one object that states:

- ``name``: its registry name, its study-file table (``[compress.<name>]``) and its stage kind;
- ``method``: the label the report uses (``"FP"``, ``"KD"``, ``"PTSQ"``) and ``compression``:
  what its models are in the paper's tables (``"pruned"``, ``"distilled"``, ``"int8"``);
- ``scope``: ``"source"`` (expanded once per source domain, from that source's baselines) or
  ``"models"`` (expanded once, after every source, from every model made so far);
- ``parse(table, ctx)``: its validated settings from the ``[compress]`` table (``None``: absent);
- ``plan(spec, ctx, models)``: its new models (each with its stage), added through ``ctx.add``;
- ``run(settings, inputs, out, reporter) -> record path``: its stage adapter, registered as the
  stage kind ``name`` (``version`` and ``resumable`` as in
  :func:`edgerobust.study.stage.register_stage`); it imports the library code (torch) lazily.

The study planner (:func:`edgerobust.study.plan.plan_study`) and the study-file reader
(:func:`edgerobust.study.spec.parse_study`) loop over :data:`COMPRESSIONS` in registration order;
a compression registered by a plugin module is planned from its own table with no other edit.
"""

from __future__ import annotations

from edgerobust.compress.registry import (  # noqa: F401 - the package's API
    COMPRESSIONS,
    Compression,
    ParseContext,
    PlanContext,
    PlannedModel,
    get_compression,
    list_compressions,
    register_compression,
)
