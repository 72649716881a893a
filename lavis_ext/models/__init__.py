"""Model architectures registered with LAVIS: exp_blip_qformer (stage 1), exp_blip (stage 2)
and its aliases au_blip / emot_blip, and expblip_blip2_opt (LAVIS's BLIP-2 OPT with the
plugin's OPT class, for the Table 2 baselines). Importing this package registers them."""
from lavis_ext.models.exp_blip import AuBlip, EmotBlip, ExpBlip, ExpBlipQformer  # noqa: F401
from lavis_ext.models.blip2_baseline import ExpBlipBlip2OPT  # noqa: F401,E402
