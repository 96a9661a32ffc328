"""cardiomics: imaging-anchored multiomics for cardiology.

The package is layered (arrows point down only)::

    interfaces  cardiomics.cli, cardiomics.mcp_server
    agents      cardiomics.agents   (LangGraph graph, planner, executor)
    tools       cardiomics.tools    (typed analysis functions, one registry)
    models      cardiomics.models   (torch models, weights, model cards)

The base modules here (``config``, ``errors``, ``hashing``, ``audit``, ``synthetic``) are used
by every layer and import none of them.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
