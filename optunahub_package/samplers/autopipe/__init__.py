"""AutoPipe on OptunaHub: a thin re-export of the pip package ``optuna-autopipe``.

Every name here is the pip package's own object, so a study run through OptunaHub and one
importing ``optuna_autopipe`` directly behave the same. ``requirements.txt`` installs it.
"""

from optuna_autopipe.corpus import Corpus
from optuna_autopipe.corpus import PROFILE_ATTR
from optuna_autopipe.early_stop import AutoPipeEarlyStop
from optuna_autopipe.early_stop import verify
from optuna_autopipe.prior import fit_prior
from optuna_autopipe.prior import Prior
from optuna_autopipe.promotion import promote_best
from optuna_autopipe.sampler import AutoPipeSampler


__all__ = [
    "PROFILE_ATTR",
    "AutoPipeEarlyStop",
    "AutoPipeSampler",
    "Corpus",
    "Prior",
    "fit_prior",
    "promote_best",
    "verify",
]
