"""The HTML report of a study or run directory (``plasticlm report DIR``).

Modules, in the order data flows through them: ``load`` (reads DIR into records), ``select``
(which runs and numbers each part shows), ``prose`` (number formats, sentences, the summary),
``figures`` (one matplotlib function per figure), ``sections`` (figures and tables, section by
section; ``diagnostics_section`` for the diagnostics), ``html`` (the self-contained page) and
``build`` (``make_report``, ``build_report``: puts them together). Reproduces the figures of
arXiv:2606.24752 (probe score over training, onset vs size) and adds the project's own (continual vs
stationary, validation bpb, scratch baseline). Import ``plasticlm.report.build`` for the entry points.
"""
