"""A one-day FCOS workshop on a CPU: exercise notebooks with checks that teach (``notebooks/workshop/``).

- :mod:`~fcos_lab.workshop.exercises`: the functions participants write, as the stubs they start from;
- :mod:`~fcos_lab.workshop.solutions`: the reference solutions (the package's own code);
- :mod:`~fcos_lab.workshop.checks` and its ``checks_*`` modules: hand-made, random and real cases, and a
  failure named in words (:mod:`~fcos_lab.workshop.checking`, :mod:`~fcos_lab.workshop.scenes`);
- :mod:`~fcos_lab.workshop.session`: :class:`~fcos_lab.workshop.session.Workshop`, what a notebook holds;
- :mod:`~fcos_lab.workshop.views`: ipywidgets views over :mod:`fcos_lab.viz`'s figures, drawn headless too
  (:mod:`~fcos_lab.workshop.display`);
- :mod:`~fcos_lab.workshop.folder`: ``fcos-lab workshop --dir DIR``.

Nothing is imported here, so ``import fcos_lab.workshop.checks`` stays free of ipywidgets and the notebooks.
"""
