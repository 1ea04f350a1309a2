import warnings

import crochet

pytest_plugins = ["tests.pg"]

warnings.filterwarnings("ignore", message=".*isSet.*", category=DeprecationWarning)

# pytest-twisted runs the reactor; crochet must use it, not start its own.
crochet.no_setup()
