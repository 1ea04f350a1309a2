import warnings

import crochet

warnings.filterwarnings("ignore", message=".*isSet.*", category=DeprecationWarning)

# pytest-twisted runs the reactor; crochet must use it, not start its own.
crochet.no_setup()
