"""Name -> model class. Adding a model: one file in this folder and one line here."""
from dimerec.models.base import Recommender
from dimerec.models.comirec_sa import ComiRecSA
from dimerec.models.dimerec import DimeRec, DimeRecNoDiff
from dimerec.models.pop import MostPopular

MODELS: dict[str, type[Recommender]] = {
    MostPopular.name: MostPopular,
    ComiRecSA.name: ComiRecSA,
    DimeRec.name: DimeRec,
    DimeRecNoDiff.name: DimeRecNoDiff,
}
