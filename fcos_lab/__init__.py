"""fcos_lab: a research and teaching workbench for FCOS (Tian et al., ICCV 2019).

Importing the package is cheap: heavy optional stacks (streamlit, fiftyone, jupyter) are imported
only by the modules that use them.
"""

__version__ = "0.1.0"
