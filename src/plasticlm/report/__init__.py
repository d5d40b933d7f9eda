"""The HTML report of a study or run directory (``plasticlm report DIR``).

Modules: ``load`` (reads DIR), ``sections`` (what the page says, section by section), ``figures``
(one matplotlib function per figure), ``html`` (the self-contained page), ``build`` (puts them
together). Reproduces the figures of arXiv:2606.24752 (probe score over training, onset vs size)
and adds the project's own (continual vs stationary, validation bpb, scratch baseline).
"""

from plasticlm.report.build import Report, build_report, make_report

__all__ = ["Report", "build_report", "make_report"]
