"""Model architectures registered with LAVIS: exp_blip_qformer (stage 1), exp_blip (stage 2)
and its aliases au_blip / emot_blip. Importing this package registers them."""
from lavis_ext.models.exp_blip import AuBlip, EmotBlip, ExpBlip, ExpBlipQformer  # noqa: F401
