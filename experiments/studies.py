"""The four studies: each states the paper's claim and the rule that decides it (written before any
number is measured), runs, and returns its results.json entry.

A study is a row of STUDIES: `run(scale, runner) -> entry`, with entry holding `claim`, `rule`,
`setup` (what was run, in words), the measured numbers per variant and seed, `parts` (the
verdict of each part) and `verdict`.
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable, Dict

import jax
import numpy as np

from experiments import amplitudes, verdicts
from experiments.digits_runs import Budget, Runner, digits_config
from experiments.scales import Scale
from swinv2_jax.models import create_model
from swinv2_jax.models.registry import ABLATIONS, model_fields
from swinv2_jax.models.swin_transformer_v2 import SWIN_V1, SWITCHES

V2 = {k: v[0] for k, v in SWITCHES.items()}


def switches(base: Dict[str, str] = V2, **changes) -> Dict[str, str]:
    """All five ablation switches, spelled out (so equal models give equal configs, and shared runs)."""
    return {**base, **changes}


# ----------------------------------------------------------------------------------------------
# Fig. 2: activation amplitudes
# ----------------------------------------------------------------------------------------------

FIG2_CLAIM = ('Sec. 3.1 / Fig. 2: with pre-norm, each residual branch adds onto the main branch and the '
              'amplitude grows block after block (a ~10^4 discrepancy between the largest and smallest '
              'layer amplitudes in the paper\'s large pre-norm models); res-post-norm keeps the amplitudes '
              'much milder.')
FIG2_RULE = ('Discrepancy = largest / smallest per-block mean |x| of the main branch across the depth. '
             'For each model, the claim holds if pre-norm\'s discrepancy is more than 2x res-post-norm\'s, '
             'does not hold if it is not larger at all, and is inconclusive in between. Parts: each '
             'size at initialisation (a), the trained digits models (b). ' + verdicts.COMBINE_RULE)


def _at_init(label: str, name: str, overrides: dict, batch: int) -> Dict[str, Any]:
    """One init of the model, its res-post norms at one (then its weights equal pre-norm's official
    init exactly), forwarded as pre-norm and as res-post-norm."""
    model = create_model(name, **overrides)
    images = jax.random.normal(jax.random.PRNGKey(1), (batch, *model.img_size, model.in_chans))
    params = jax.jit(model.init)(jax.random.PRNGKey(0), images[:1])['params']
    params = amplitudes.post_norms_to_one(params)
    out = {'model': name, 'overrides': {k: v for k, v in overrides.items()},
           'num_params': int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))}
    for placement in ('pre', 'res_post'):
        amp = amplitudes.block_amplitudes(model.clone(norm_placement=placement), {'params': params}, images)
        out[placement] = dict(amp, discrepancy=amplitudes.discrepancy(amp['mean_abs']))
    del params
    return out


def _trained(scale: Scale, runner: Runner) -> Dict[str, Any]:
    from swinv2_jax import data   # TensorFlow: imported when a study reads the digits
    out = {}
    for placement in ('pre', 'res_post'):
        config = digits_config(scale.deep_budget, **scale.deep_model, **switches(norm_placement=placement))
        run = runner.train(f'fig2b-{placement}', config)
        if run.state is None:
            raise RuntimeError(f'the Fig. 2(b) {placement} run diverged ({run.diverged}); see {run.workdir}')
        batch = next(data.eval_iterator(config, config.eval_split, run.model.img_size, 64))
        images = batch['image'][batch['mask'] > 0]
        amp = amplitudes.block_amplitudes(run.model, {'params': run.state.params}, images)
        out[placement] = dict(amp, discrepancy=amplitudes.discrepancy(amp['mean_abs']), top1=run.top1)
    return out


def fig2_amplitudes(scale: Scale, runner: Runner) -> Dict[str, Any]:
    models = {}
    for label, (name, overrides) in scale.init_models.items():
        t = time.perf_counter()
        models[label] = _at_init(label, name, overrides, scale.init_batch)
        print(f'[paper_claims]   {label} at init: {time.perf_counter() - t:.0f} s', flush=True)
    models['digits, trained'] = _trained(scale, runner)
    parts = {label: verdicts.amplitude_verdict(m['pre']['discrepancy'], m['res_post']['discrepancy'])
             for label, m in models.items()}
    setup = (f'(a) {", ".join(scale.init_models)} at their registered size, official initialisation with '
             f'every res-post norm\'s scale set to 1, {scale.init_batch} N(0, 1) images; the same weights '
             f'run as pre-norm and as res-post-norm. (b) the deep digits model {scale.deep_model} trained '
             f'{scale.deep_budget.epochs:g} epochs as pre-norm and as res-post-norm (other switches V2), '
             f'amplitudes on 64 held-out digits.')
    return dict(claim=FIG2_CLAIM, rule=FIG2_RULE, setup=setup, models=models, parts=parts,
                verdict=verdicts.combine(parts.values()))


# ----------------------------------------------------------------------------------------------
# Fig. 3: training stability
# ----------------------------------------------------------------------------------------------

STABILITY_CLAIM = ('Sec. 3.1 / 4.4 / Fig. 3: res-post-norm with scaled cosine attention trains stably where '
                   'pre-norm with dot-product attention diverges.')
STABILITY_RULE = ('A run diverges if its loss becomes NaN or its last logged loss is not below its first. '
                  'Holds if res-post-norm + cosine diverges at fewer of the learning rates than pre-norm + dot '
                  'product and at none where pre-norm trains; does not hold if it diverges where pre-norm '
                  'trains, or at as many rates when pre-norm diverges at all; inconclusive when neither '
                  'diverges.')
STABILITY_VARIANTS = {'pre-norm + dot product': dict(norm_placement='pre', attention='dot'),
                      'res-post-norm + cosine': dict(norm_placement='res_post', attention='cosine')}


def stability(scale: Scale, runner: Runner) -> Dict[str, Any]:
    runs: Dict[str, Dict[str, Any]] = {}
    for label, change in STABILITY_VARIANTS.items():
        runs[label] = {}
        for factor in scale.lr_scales:
            config = digits_config(scale.deep_budget, lr_scale=factor, **scale.deep_model, **switches(**change))
            run = runner.train(f'stability-{change["norm_placement"]}-x{factor:g}', config)
            runs[label][f'lr x{factor:g}'] = dict(lr_per_512=float(config.optim.lr), losses=run.losses,
                                                  diverged=run.diverged, top1=run.top1)
    diverged = {label: [r['diverged'] is not None for r in v.values()] for label, v in runs.items()}
    verdict = verdicts.stability_verdict(*diverged.values())
    setup = (f'the deep digits model {scale.deep_model} ({sum(scale.deep_model["depths"])} blocks), '
             f'{scale.deep_budget.epochs:g} epochs, seed 0, the digits recipe\'s learning rate times '
             f'{", ".join(f"{f:g}" for f in scale.lr_scales)} (AdamW, gradient clipping at 5 as in the recipe).')
    return dict(claim=STABILITY_CLAIM, rule=STABILITY_RULE, setup=setup, runs=runs,
                parts={'stability': verdict}, verdict=verdict)


# ----------------------------------------------------------------------------------------------
# Table 1: window transfer
# ----------------------------------------------------------------------------------------------

TABLE1_CLAIM = ('Table 1: moved to larger windows, log-spaced CPB transfers best, linear-spaced CPB next, '
                'the parameterized bias table (bicubically resized) worst; without fine-tuning and after it.')
TABLE1_RULE = ('Top-1 averaged over the target sizes. Margin: without fine-tuning (3 seeds), twice the '
               'largest seed standard deviation of the three modes\' averages; after the fine-tune (seed 0), '
               'twice the binomial standard error of a difference over all target-size predictions. '
               'Holds if both CPB modes beat the table by more than the margin and log-spaced is not worse '
               'than linear-spaced by more than it; does not hold if the table beats either CPB mode, or '
               'linear beats log, by more than the margin; inconclusive otherwise. Parts: without '
               'fine-tuning, after fine-tuning. ' + verdicts.COMBINE_RULE)
TABLE1_MODES = {'log-spaced CPB': ABLATIONS['table1_log_cpb'], 'linear-spaced CPB': ABLATIONS['table1_linear_cpb'],
                'parameterized table': ABLATIONS['table1_parameterized']}


def scale_window(scale: Scale) -> int:
    """The window the digits models train at (the registered model's unless the scale changes it)."""
    return int(scale.digits_model.get('window_size', 4))


def _target_config(scale: Scale, budget: Budget, mode: dict, size: int, window: int, **keys):
    """The digits config at another size and window; CPB coordinates normalised by the training window."""
    config = digits_config(budget, **scale.digits_model, **switches(**mode), img_size=size, window_size=window,
                           pretrained_window_sizes=scale_window(scale))
    for k, v in keys.items():
        config[k] = v
    return config


class HeldOut:
    """The held-out digits at each size (the trainer's evaluation preprocessing), and top-1 of a
    trained run's weights moved to another model with `weights.transfer.transfer_params` (the
    library's window transfer: CPB weights unchanged, V1 tables resized bicubically)."""

    def __init__(self):
        self._images: Dict[int, Any] = {}
        self._apply: Dict[Any, Any] = {}

    def images(self, config, size: int):
        if size not in self._images:
            from swinv2_jax import data   # TensorFlow: imported when a study reads the digits
            batches = list(data.eval_iterator(config, config.eval_split, (size, size), 320))
            keep = [b['mask'] > 0 for b in batches]
            self._images[size] = (np.concatenate([b['image'][k] for b, k in zip(batches, keep)]),
                                  np.concatenate([b['label'][k] for b, k in zip(batches, keep)]))
        return self._images[size]

    def top1(self, run, target_config) -> float:
        from swinv2_jax.train import objectives
        from swinv2_jax.weights import transfer
        target = objectives.build_model(target_config, run.model.num_classes)
        params, _ = transfer.transfer_params(run.state.params, run.model, target)
        key = json.dumps(model_fields(target), sort_keys=True)   # one compile per model, not per seed
        if key not in self._apply:
            self._apply[key] = jax.jit(lambda p, x: target.apply({'params': p}, x))
        images, labels = self.images(target_config, target.img_size[0])
        logits = np.asarray(self._apply[key](params, images))
        return float(np.mean(logits.argmax(-1) == labels))


def _finetune(scale: Scale, runner: Runner, mode: dict, size: int, window: int, source: str):
    budget = Budget(epochs=1, log_every_steps=max(1, scale.finetune_steps // 4), batch_size=scale.finetune_batch)
    config = _target_config(scale, budget, mode, size, window, init_from=source,
                            num_train_steps=scale.finetune_steps)
    config.optim.lr = config.optim.lr * scale.finetune_lr_scale
    config.optim.warmup_steps = max(1, scale.finetune_steps // 8)
    return runner.train(f'finetune{size}', config).top1


def table1_window_transfer(scale: Scale, runner: Runner) -> Dict[str, Any]:
    sizes = [f'{s}/w{w}' for s, w in scale.transfer_sizes]
    ft_sizes = [f'{s}/w{w}' for s, w in scale.finetune_sizes]
    out: Dict[str, Any] = {'trained_top1': {}, 'direct': {}, 'finetuned': {}}
    held_out = HeldOut()
    for label, mode in TABLE1_MODES.items():
        out['trained_top1'][label], out['direct'][label], out['finetuned'][label] = {}, {s: {} for s in sizes}, {}
        for seed in scale.seeds:
            src = runner.train(f'digits-s{seed}', digits_config(scale.budget, seed=seed, **scale.digits_model,
                                                               **switches(**mode)))
            out['trained_top1'][label][str(seed)] = src.top1
            if src.state is None:   # diverged: nothing to transfer
                continue
            # the in-process evaluation must reproduce the trainer's at the training size
            again = held_out.top1(src, _target_config(scale, scale.budget, mode, 32, scale_window(scale), seed=seed))
            if src.top1 is not None and abs(again - src.top1) > 1.5 / 300:
                raise RuntimeError(f'{label} seed {seed}: held-out top-1 {again} here, {src.top1} in the trainer')
            for key, (size, window) in zip(sizes, scale.transfer_sizes):
                out['direct'][label][key][str(seed)] = held_out.top1(
                    src, _target_config(scale, scale.budget, mode, size, window, seed=seed))
            if seed == scale.seeds[0]:
                for key, (size, window) in zip(ft_sizes, scale.finetune_sizes):
                    out['finetuned'][label][key] = _finetune(scale, runner, mode, size, window, src.workdir)
    parts = _table1_parts(out, sizes, ft_sizes, len(scale.seeds))
    setup = (f'the digits model{" " + str(scale.digits_model) if scale.digits_model else ""} (res-post-norm, '
             f'cosine) with each position bias, trained at 32 px / window {scale_window(scale)} for '
             f'{scale.budget.epochs:g} epochs (seeds {", ".join(map(str, scale.seeds))}); the same weights '
             f'evaluated at {", ".join(sizes)} (the digits upscaled bicubically) through '
             f'`weights.transfer.transfer_params` (CPB: pretrained_window_sizes={scale_window(scale)}; the table '
             f'resized bicubically), and fine-tuned from seed {scale.seeds[0]} for {scale.finetune_steps} steps '
             f'(batch {scale.finetune_batch}, the recipe\'s lr x{scale.finetune_lr_scale:g}, train.py\'s init_from) '
             f'at {", ".join(ft_sizes)}.')
    return dict(claim=TABLE1_CLAIM, rule=TABLE1_RULE, setup=setup, **out, parts=parts,
                verdict=verdicts.combine(parts.values()))


def _table1_parts(out: Dict[str, Any], sizes, ft_sizes, num_seeds: int) -> Dict[str, str]:
    """The rule of TABLE1_RULE on the measured numbers (None top-1, a diverged run, counts as 0)."""
    def acc(v):
        return 0.0 if v is None else float(v)
    averaged = {label: [np.mean([acc(per_size[s].get(str(seed))) for s in sizes]) for seed in out['trained_top1'][label]]
                for label, per_size in out['direct'].items()}
    stats = {label: verdicts.mean_std(v) for label, v in averaged.items()}
    margin = 2.0 * max(s['std'] for s in stats.values())
    log, lin, table = (stats[k]['mean'] for k in TABLE1_MODES)
    direct = verdicts.ordering_verdict(log, lin, table, margin) if num_seeds > 1 else verdicts.UNSURE
    ft = {label: float(np.mean([acc(v.get(s)) for s in ft_sizes])) for label, v in out['finetuned'].items()}
    n = 300 * len(ft_sizes)
    ft_margin = max(verdicts.binomial_margin(ft[a], ft[b], n) for a in ft for b in ft)
    finetuned = verdicts.ordering_verdict(*(ft[k] for k in TABLE1_MODES), ft_margin)
    out['summary'] = {'direct_mean_over_sizes': stats, 'direct_margin': margin,
                      'finetuned_mean_over_sizes': ft, 'finetuned_margin': ft_margin}
    return {'without fine-tuning': direct, 'after fine-tuning': finetuned}


# ----------------------------------------------------------------------------------------------
# Table 6: the ablation
# ----------------------------------------------------------------------------------------------

TABLE6_CLAIM = ('Table 6: res-post-norm, then scaled cosine attention, each improve Swin V1\'s top-1 '
                '(+0.2 to +0.5 points at T/S/B on ImageNet-1K), and the full SwinV2 is best.')
TABLE6_RULE = ('Held-out top-1 over 3 seeds. A step improves (worsens) if its mean is higher (lower) than the '
               'previous row\'s by more than twice the larger seed standard deviation of the two. Holds if '
               'SwinV2 improves on Swin V1 and no step worsens; does not hold if SwinV2 is worse than Swin V1 '
               'by that margin, or a step worsens; inconclusive otherwise.')
TABLE6_ROWS = {
    'Swin V1': switches(SWIN_V1, **ABLATIONS['table6_swin_v1']),
    '+ res-post-norm': switches(SWIN_V1, **ABLATIONS['table6_res_post_norm']),
    '+ res-post-norm + scaled cosine': switches(SWIN_V1, **ABLATIONS['table6_res_post_norm_cosine']),
    'SwinV2': switches(),
}


def table6_ablation(scale: Scale, runner: Runner) -> Dict[str, Any]:
    rows = {}
    for label, row in TABLE6_ROWS.items():
        top1 = {}
        for seed in scale.seeds:
            run = runner.train(f'digits-s{seed}', digits_config(scale.budget, seed=seed, **scale.digits_model, **row))
            top1[str(seed)] = 0.0 if run.top1 is None else run.top1
        rows[label] = dict(switches=row, top1=top1, **verdicts.mean_std(list(top1.values())))
    verdict = verdicts.ablation_verdict(list(rows.values()))
    setup = (f'the digits model{" " + str(scale.digits_model) if scale.digits_model else ""} at 32 px / '
             f'window {scale_window(scale)}, {scale.budget.epochs:g} epochs, seeds '
             f'{", ".join(map(str, scale.seeds))}; Swin V1 = every switch at its V1 value (pre-norm, dot product, '
             f'bias table, qkv bias, V1 patch merging); the rows are the registry\'s table6_* ablations on it; '
             f'SwinV2 = every switch at its V2 value.')
    return dict(claim=TABLE6_CLAIM, rule=TABLE6_RULE, setup=setup, rows=rows, parts={'ablation': verdict},
                verdict=verdict)


STUDIES: Dict[str, Callable[[Scale, Runner], Dict[str, Any]]] = {
    'fig2_amplitudes': fig2_amplitudes,
    'stability': stability,
    'table1_window_transfer': table1_window_transfer,
    'table6_ablation': table6_ablation,
}
RULES = {'fig2_amplitudes': (FIG2_CLAIM, FIG2_RULE), 'stability': (STABILITY_CLAIM, STABILITY_RULE),
         'table1_window_transfer': (TABLE1_CLAIM, TABLE1_RULE), 'table6_ablation': (TABLE6_CLAIM, TABLE6_RULE)}


def run_study(name: str, scale: Scale, runner: Runner) -> Dict[str, Any]:
    t = time.perf_counter()
    entry = STUDIES[name](scale, runner)
    entry['seconds'] = time.perf_counter() - t
    return entry
