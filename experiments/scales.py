"""The two sizes the studies run at: FULL (the committed docs/paper_claims/, 20-25 min on 2 CPU
cores) and QUICK (every study, every code path, toy models, about three minutes: the tests).

The training budget is deliberately short (6 epochs, where the digits recipe trains 40) so that
held-out top-1 stays near 90% rather than saturating at 98-99%, and differences between variants
remain visible; it is the same for every variant of a study.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

from experiments.digits_runs import Budget


@dataclasses.dataclass(frozen=True)
class Scale:
    name: str
    # Fig. 2(a): label -> (registered model, create_model overrides), built at init
    init_models: Dict[str, Tuple[str, dict]]
    init_batch: int
    # the digits classifier of Table 1 / Table 6 (overrides of swinv2_digits_window4_32) and its budget
    digits_model: dict
    budget: Budget
    seeds: Tuple[int, ...]
    # the deeper, narrower digits model of Fig. 3 and Fig. 2(b), its budget and learning rate factors
    deep_model: dict
    deep_budget: Budget
    lr_scales: Tuple[float, ...]
    # Table 1: (image size, window) targets; the fine-tune's steps, batch and learning rate factor
    transfer_sizes: Tuple[Tuple[int, int], ...]
    finetune_sizes: Tuple[Tuple[int, int], ...]
    finetune_steps: int
    finetune_batch: int
    finetune_lr_scale: float = 0.25


_AT_INIT = dict(num_classes=0, drop_path_rate=0.0)

FULL = Scale(
    name='full',
    init_models={'SwinV2-B': ('swinv2_base_window12_192', _AT_INIT),
                 'SwinV2-L': ('swinv2_large_window12_192', _AT_INIT),
                 'SwinV2-H': ('swinv2_huge_window12_192', _AT_INIT)},
    init_batch=2,
    digits_model={},
    budget=Budget(epochs=6, log_every_steps=23),
    seeds=(0, 1, 2),
    deep_model=dict(embed_dim=32, depths=(2, 10), num_heads=(2, 4)),
    deep_budget=Budget(epochs=5, log_every_steps=5),
    lr_scales=(1.0, 4.0, 16.0),
    transfer_sizes=((48, 6), (64, 8), (96, 12)),
    finetune_sizes=((48, 6), (64, 8), (96, 12)),
    finetune_steps=24,
    finetune_batch=32,
)

# Toy sizes: the same studies and code paths in about three minutes (the numbers mean nothing).
_TOY_INIT = dict(_AT_INIT, img_size=32, window_size=4, depths=(1, 2), num_heads=(1, 2))
QUICK = Scale(
    name='quick',
    init_models={'SwinV2-B (toy)': ('swinv2_base_window12_192', dict(_TOY_INIT, embed_dim=16)),
                 'SwinV2-L (toy)': ('swinv2_large_window12_192', dict(_TOY_INIT, embed_dim=24)),
                 'SwinV2-H (toy)': ('swinv2_huge_window12_192', dict(_TOY_INIT, embed_dim=32))},
    init_batch=1,
    digits_model=dict(embed_dim=16, depths=(1, 1), num_heads=(1, 2)),
    budget=Budget(epochs=0.1, log_every_steps=1, batch_size=32),
    seeds=(0,),
    deep_model=dict(embed_dim=16, depths=(1, 3), num_heads=(1, 2)),
    deep_budget=Budget(epochs=0.1, log_every_steps=1, batch_size=32),
    lr_scales=(1.0, 16.0),
    transfer_sizes=((48, 6), (64, 8), (96, 12)),
    finetune_sizes=((96, 12),),
    finetune_steps=2,
    finetune_batch=16,
)

SCALES = {s.name: s for s in (FULL, QUICK)}
