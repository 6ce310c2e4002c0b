"""Name -> model class. Adding a model: one file in this folder and one line here."""
from dimerec.models.base import Recommender
from dimerec.models.comirec_dr import ComiRecDR
from dimerec.models.comirec_sa import ComiRecSA
from dimerec.models.diffurec import DiffuRec
from dimerec.models.dimerec import DimeRec, DimeRecNoDiff
from dimerec.models.dreamrec import DreamRec
from dimerec.models.gru4rec import GRU4Rec
from dimerec.models.mind import MIND
from dimerec.models.multvae import MultVAE
from dimerec.models.pop import MostPopular
from dimerec.models.sasrec import SASRec

MODELS: dict[str, type[Recommender]] = {model.name: model for model in (
    MostPopular, SASRec, GRU4Rec, MIND, ComiRecSA, ComiRecDR, MultVAE, DreamRec, DiffuRec, DimeRec, DimeRecNoDiff,
)}
