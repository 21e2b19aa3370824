"""The LLM benchmark's models (``LLM=1 make bench``, ``loadbench/llm.py``): ``models.py`` serves them, ``compute.py``
does their work with NumPy alone, so that LitServe's script serves the very same (``servers/litserve_llm.py``)."""
