"""Settings for the whole test session."""
import os

# Tests that isolate crashes run child interpreters (`python -c`), which would import fastconv
# from their working directory first: after `pip install .`, pytest runs from the checkout,
# whose fastconv/ has no compiled kernels. PYTHONSAFEPATH (Python >= 3.11) keeps the working
# directory off the children's sys.path, so they import the fastconv under test.
os.environ.setdefault("PYTHONSAFEPATH", "1")
