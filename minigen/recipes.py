"""Recipes: each course model's preset and training budget per profile, written once (DESIGN sections 1, 7, 10).

A notebook and `make checkpoints` run the same recipe, so the course checkpoint is the notebook's `gpu`-profile
model (the same preset, the same TrainConfig, the same seed), or where it was built on a CPU, the notebook's `cpu`
recipe run for more steps (checkpoint_recipe).

    r = recipe("vae", P.name)           # Recipe(name="vae", profile="cpu", preset="VAE-B", train=TrainConfig(...))
    model = r.build().to(device)        # VAE(VAE_PRESETS["VAE-B"]); a diffusion recipe wraps its U-Net in Diffusion
    Trainer(model, BinarizedBatches(load_mnist("train").images), r.train).fit()

    model, info = course_checkpoint("vae")   # recipe("vae", "gpu") on a GPU (on a CPU the cpu recipe, run longer),
                                             # trained on its data and measured

Model size and compute budget are two things: `preset` names a size in the model file's PRESETS dict ("VAE-L"),
`train` is the profile's TrainConfig. Each recipe function below picks both for a profile, with the reason
beside each number. Dependencies point down from here: recipes -> models -> nn -> kernels; no model file
imports this module (tests/test_imports.py).
"""
import copy
from dataclasses import dataclass, replace

import torch
from torch import nn

import minigen
from minigen import metrics
from minigen.data import load_mnist
from minigen.diffusion import Diffusion, DiffusionConfig, FlowMatching, FlowMatchingConfig, ddim_sample
from minigen.models.autoencoder import AE_PRESETS, Autoencoder
from minigen.models.captioner import CAPTIONER_PRESETS, Captioner
from minigen.models.clip import CLIP, CLIP_PRESETS
from minigen.models.dit import DIT_PRESETS, TEXT_DIT_PRESETS, DiT
from minigen.models.flow import FLOW_PRESETS, Flow, evaluate_bits_per_dim
from minigen.models.frame_judge import FRAME_JUDGE_PRESETS, FrameJudge
from minigen.models.gan import GAN, GAN_PRESETS, FlowGAN, VAEGAN
from minigen.models.judge import JUDGE_PRESETS, AttributeJudge
from minigen.models.latent import KLAE_PRESETS, KLAutoencoder
from minigen.models.mae import MAE, MAE_PRESETS
from minigen.models.scene_judge import SCENE_JUDGE_PRESETS, SceneJudge
from minigen.models.unet import UNET_PRESETS, UNet
from minigen.models.vae import VAE, VAE_PRESETS, binarize
from minigen.models.vae import evaluate as evaluate_vae
from minigen.models.video import VIDEO_PRESETS, VideoDiT, VideoFlowMatching
from minigen.profile import NAMES as PROFILE_NAMES
from minigen.profile import PROFILES, Profile, current
from minigen.train import EpochSampler, TrainConfig, Trainer

# recipe name -> (model class, its presets): what `Recipe.build` constructs
MODELS = {
    "autoencoder": (Autoencoder, AE_PRESETS),
    "mae": (MAE, MAE_PRESETS),
    "vae": (VAE, VAE_PRESETS),
    "flow": (Flow, FLOW_PRESETS),
    "diffusion": (UNet, UNET_PRESETS),
    "latent": (KLAutoencoder, KLAE_PRESETS),
    "dit": (DiT, DIT_PRESETS),
    "dit-fm": (DiT, DIT_PRESETS),
    "gan": (GAN, GAN_PRESETS),
    "gan-c": (GAN, GAN_PRESETS),
    "diffusion-gan": (GAN, GAN_PRESETS),
    "vae-gan": (VAE, VAE_PRESETS),
    "flow-gan": (Flow, FLOW_PRESETS),
    "face-judge": (AttributeJudge, JUDGE_PRESETS),
    "vae-faces": (VAE, VAE_PRESETS),
    "gan-faces": (GAN, GAN_PRESETS),
    "diffusion-faces": (UNet, UNET_PRESETS),
    "clip": (CLIP, CLIP_PRESETS),
    "captioner": (Captioner, CAPTIONER_PRESETS),
    "scene-judge": (SceneJudge, SCENE_JUDGE_PRESETS),
    "t2i": (DiT, TEXT_DIT_PRESETS),
    "video": (VideoDiT, VIDEO_PRESETS),
    "video-full": (VideoDiT, VIDEO_PRESETS),
    "frame-judge": (FrameJudge, FRAME_JUDGE_PRESETS),
}
HYBRIDS = {"vae-gan": VAEGAN, "flow-gan": FlowGAN}  # recipe -> the wrapper that adds a judge to the preset's model
VIDEO = ("video", "video-full")  # recipes whose network is wrapped in VideoFlowMatching (x-prediction, first frame)


@dataclass(frozen=True)
class Recipe:
    name: str                                # "vae": a key of MODELS
    profile: str                             # "ci" | "cpu" | "gpu"
    preset: str                              # "VAE-L": a key of the model file's PRESETS dict
    train: TrainConfig                       # steps, batch, lr, warmup, cosine, EMA, seed ... for this profile
    diffusion: DiffusionConfig | None = None  # diffusion recipes: schedule and labels (the denoiser is the preset)
    flow: FlowMatchingConfig | None = None   # flow-matching recipes: t sampling and labels (the network is the preset)
    judge: str | None = None                 # hybrids: the GAN preset whose Discriminator judges the model's samples

    def model_config(self):
        """The preset's config dataclass: a copy, so changing it leaves the PRESETS dict alone."""
        return copy.deepcopy(MODELS[self.name][1][self.preset])

    def diffusion_config(self) -> DiffusionConfig | None:
        """The full DiffusionConfig of the built model (the preset's config nested as its denoiser)."""
        return None if self.diffusion is None else replace(self.diffusion, denoiser=self.model_config())

    def build(self, device=None, text_encoder: nn.Module | None = None, **hybrid) -> nn.Module:
        """The untrained model: the preset's network, wrapped in minigen.diffusion.Diffusion for a diffusion
        recipe, in FlowMatching for a flow-matching one, in VAEGAN / FlowGAN with the `judge` preset's
        Discriminator for a hybrid (keyword arguments go to that wrapper, e.g. mode="adversarial"), in
        VideoFlowMatching for a video recipe ("video", "video-full"). A caption
        model ("t2i") is built around `text_encoder`, a trained CLIP's text tower. Draws its initial weights from
        the global RNG, as constructing the class by hand does."""
        config = self.model_config()
        if text_encoder is not None or getattr(config, "text_dim", None) is not None:
            if text_encoder is None:
                raise ValueError(f"recipe {self.name!r} builds a caption model: pass text_encoder= (a trained "
                                 f"CLIP's text tower, e.g. clip.text)")
            model = MODELS[self.name][0](config, text_encoder=text_encoder)
        else:
            model = MODELS[self.name][0](config)
        if self.diffusion is not None:
            model = Diffusion.from_config(model, replace(self.diffusion, denoiser=model.config))
        if self.flow is not None:
            model = FlowMatching(model, self.flow)
        if self.name in VIDEO:
            model = VideoFlowMatching(model)
        if self.name in HYBRIDS:
            model = HYBRIDS[self.name](model, copy.deepcopy(GAN_PRESETS[self.judge]), **hybrid)
        elif hybrid:
            raise TypeError(f"recipe {self.name!r} builds no hybrid; unexpected arguments {sorted(hybrid)}")
        return model if device is None else model.to(device)


# ----------------------------------------------------------------------------------------------------
# One function per model: the profile's preset and budget. ci proves every cell runs in about a minute on
# 2 CPU cores; cpu gives recognisable samples in minutes on a laptop; gpu is the course checkpoint's run.
# ----------------------------------------------------------------------------------------------------

def _autoencoder(P: Profile) -> Recipe:
    return Recipe("autoencoder", P.name, P.pick(ci="AE-S", cpu="AE-B", gpu="AE-L"), TrainConfig(
        steps=P.pick(ci=120, cpu=1500, gpu=6000),  # ci: a smoke test; cpu: ~1 min, past PCA-16; gpu: converged MSE
        batch_size=P.batch_size,                   # the profile's default batch: 64 / 128 / 256
        lr=2e-3,                                   # a small conv net with warmup tolerates a high Adam rate
        warmup=50,                                 # a few dozen steps keep the first large updates from diverging
        cosine=True,                               # decay to 0: short runs end on a sharp minimum
        seed=0))                                   # the notebook's data order


def _mae(P: Profile) -> Recipe:
    # He et al.'s MAE recipe scaled down: AdamW with weight decay 0.05, warmup, cosine decay
    return Recipe("mae", P.name, P.pick(ci="MAE-S", cpu="MAE-B", gpu="MAE-L"), TrainConfig(
        steps=P.pick(ci=200, cpu=1500, gpu=8000),    # transformers need more steps than the conv autoencoder
        batch_size=P.batch_size,                     # the profile's default batch: 64 / 128 / 256
        lr=P.pick(ci=4e-3, cpu=3e-3, gpu=2e-3),      # shorter runs take larger steps; the wider gpu model a smaller one
        weight_decay=0.05,                           # MAE's value; norms, biases, embeddings exempt (train.adamw)
        warmup=P.pick(ci=20, cpu=100, gpu=400),      # about 5-10 % of the run: attention is unstable at full lr early
        cosine=True,
        seed=0))


def _vae(P: Profile) -> Recipe:
    # Notebook 02's main model; the gpu values are also what the former vae.course_checkpoint() ran (that ran
    # with progress=False; make checkpoints now shows the bar).
    return Recipe("vae", P.name, P.pick(ci="VAE-S", cpu="VAE-B", gpu="VAE-L"), TrainConfig(
        steps=P.pick(ci=100, cpu=3_500, gpu=30_000),  # cpu: ~5 CPU-min to <= 95 nats; gpu: the 30k-step checkpoint
        batch_size=P.pick(ci=64, cpu=128, gpu=128),   # 128 even on a GPU: more steps beat bigger batches here
        lr=1e-3,                                      # Adam's default: the ELBO's KL term is touchy at higher rates
        cosine=True,                                  # decay to 0: the bound ends a few nats lower than at a flat lr
        log_every=10,                                 # the loss curves plot recon and KL every 10 steps
        seed=0))


def _flow(P: Profile) -> Recipe:
    # Notebook 03's main model; the gpu values are also what the former flow.course_checkpoint() ran.
    return Recipe("flow", P.name, P.pick(ci="Flow-S", cpu="Flow-B", gpu="Flow-L"), TrainConfig(
        steps=P.pick(ci=30, cpu=3300, gpu=12000),     # cpu: 1.74 bits/dim in ~5 CPU-min; gpu: the course checkpoint
        batch_size=P.pick(ci=32, cpu=64, gpu=128),    # small batches: more updates per CPU-second
        lr=P.pick(ci=2e-3, cpu=2e-3, gpu=1e-3),       # the deeper gpu flow (12 steps per scale) wants a smaller step
        warmup=P.pick(ci=5, cpu=100, gpu=500),        # ActNorm's data-dependent start needs a gentle first few hundred
        cosine=True,
        grad_clip=50.0,                               # log-dets give large but honest gradients early: clip only spikes
        log_every=10,
        seed=0))


def _diffusion(P: Profile) -> Recipe:
    # Notebook 04's class-conditional U-Net; the gpu values are also what the former unet.course_checkpoint() ran.
    schedule = DiffusionConfig(
        schedule="cosine",                          # Improved DDPM's: every step does useful work at 28 x 28
        num_steps=P.pick(ci=100, cpu=1000, gpu=1000),  # ci: a short chain keeps DDPM's full-chain sampling fast
        num_classes=10,                             # digits; label 10 is the null label for guidance
        p_uncond=0.1)                               # 10 % label dropout: one network learns p(x | y) and p(x)
    return Recipe("diffusion", P.name, P.pick(ci="UNet-S", cpu="UNet-B", gpu="UNet-L"), TrainConfig(
        steps=P.pick(ci=40, cpu=1500, gpu=8000),    # cpu: ~5 minutes on 2 cores; gpu: about 10 minutes on a T4
        batch_size=P.pick(ci=32, cpu=128, gpu=256),
        lr=2e-3,                                    # a small U-Net with zero-init branches trains fast at 2e-3
        warmup=P.pick(ci=5, cpu=100, gpu=200),
        cosine=True,
        ema_decay=P.pick(ci=0.9, cpu=0.995, gpu=0.999),  # averages ~1/(1 - decay) steps: well under the run's length
        seed=0), diffusion=schedule)


def _latent(P: Profile) -> Recipe:
    # Notebook 06's KL autoencoder: the latent space its DiTs generate in
    return Recipe("latent", P.name, P.pick(ci="KLAE-S", cpu="KLAE-B", gpu="KLAE-L"), TrainConfig(
        steps=P.pick(ci=150, cpu=800, gpu=6000),    # cpu: 800 steps reconstruct below the real-vs-real FD floor
        batch_size=P.batch_size,                    # the profile's default batch: 64 / 128 / 256
        lr=2e-3,                                    # as the plain autoencoder's: a small conv net with warmup
        warmup=50,
        cosine=True,
        seed=0))


def _dit_train(P: Profile) -> TrainConfig:
    """One budget for both DiT objectives, so the notebook compares them at equal training."""
    return TrainConfig(
        steps=P.pick(ci=60, cpu=1500, gpu=12000),   # cpu: ~1.5 min each on 2 cores (DiT-T/2 on 16 tokens)
        batch_size=P.pick(ci=64, cpu=128, gpu=256),
        lr=P.pick(ci=2e-3, cpu=2e-3, gpu=5e-4),     # 20x DiT's 1e-4: a small model on a short run, with warmup;
                                                    # in a 1500-step cpu trial 2e-3 beat 1e-3 (classifier accuracy
                                                    # of guided Euler-16 samples 0.98 vs 0.78)
        warmup=P.pick(ci=5, cpu=100, gpu=500),      # attention is unstable at full lr for the first updates
        cosine=True,
        ema_decay=P.pick(ci=0.9, cpu=0.995, gpu=0.9995),  # averages ~1/(1 - decay) steps: well under the run
        seed=0)


def _dit(P: Profile) -> Recipe:
    # Notebook 06's latent DiT trained to predict noise, with notebook 04's schedule
    schedule = DiffusionConfig(schedule="cosine", num_steps=1000, num_classes=10, p_uncond=0.1)
    return Recipe("dit", P.name, P.pick(ci="DiT-T/2", cpu="DiT-T/2", gpu="DiT-B/2"), _dit_train(P),
                  diffusion=schedule)


def _dit_fm(P: Profile) -> Recipe:
    # The same DiT trained by flow matching: straight paths, velocity target, SD3's logit-normal times
    flow = FlowMatchingConfig(t_sampling="logit-normal", num_classes=10, p_uncond=0.1)
    return Recipe("dit-fm", P.name, P.pick(ci="DiT-T/2", cpu="DiT-T/2", gpu="DiT-B/2"), _dit_train(P), flow=flow)


def _gan_train(P: Profile, steps: int) -> TrainConfig:
    return TrainConfig(
        steps=steps,
        batch_size=64,                              # DCGAN's batch; on a CPU more small steps beat fewer large ones
        lr=P.pick(ci=1e-3, cpu=2e-3, gpu=5e-4),     # 10x DCGAN's 2e-4: with R1 the game stays stable and a short
                                                    # run gets further (cpu trials, FD at n=2000 of the live weights:
                                                    # 1e-3 -> 100 vs 2e-4 -> 188 after 4000 steps; 2e-3 -> 102 vs
                                                    # 1e-3 -> 122 after 3000)
        betas=(0.5, 0.999),                         # DCGAN's: a short momentum memory suits a moving target
        grad_clip=None,                             # R1 keeps the judge's gradients tame; clipping would slow G
        ema_decay=P.pick(ci=0.9, cpu=0.999, gpu=0.9995),  # sample from an average of the generator's last weights
        log_every=P.pick(ci=10, cpu=25, gpu=50),
        seed=0)


def _gan(P: Profile) -> Recipe:
    # Notebook 05's unconditional DCGAN-style pair with the non-saturating loss and lazy R1
    return Recipe("gan", P.name, P.pick(ci="GAN-S", cpu="GAN-B", gpu="GAN-L"),
                  _gan_train(P, P.pick(ci=150, cpu=10000, gpu=30000)))  # cpu: ~4.7 min on 2 cores


def _gan_c(P: Profile) -> Recipe:
    # The same pair told the digit: the generator embeds it, the judge projects on it (Miyato & Koyama)
    return Recipe("gan-c", P.name, P.pick(ci="GAN-S-C", cpu="GAN-B-C", gpu="GAN-L-C"),
                  _gan_train(P, P.pick(ci=100, cpu=2000, gpu=20000)))


def _diffusion_gan(P: Profile) -> Recipe:
    # The unconditional pair trained on 1,000 digits, where a judge memorises; with and without Diffusion-GAN's
    # noise (the notebook sets noise_levels, and r1_gamma=0 for both: R1 is itself a cure for an overfit judge)
    return Recipe("diffusion-gan", P.name, P.pick(ci="GAN-S", cpu="GAN-B", gpu="GAN-L"),
                  _gan_train(P, P.pick(ci=100, cpu=3000, gpu=15000)))


def _vae_gan(P: Profile) -> Recipe:
    # Notebook 02's VAE preset, its decoder also judged (Larsen et al.); the plain VAE gets the same budget
    return Recipe("vae-gan", P.name, P.pick(ci="VAE-S", cpu="VAE-B", gpu="VAE-L"), TrainConfig(
        steps=P.pick(ci=60, cpu=1000, gpu=20000),   # cpu: the plain VAE ~0.5 min, the VAE-GAN ~1.5 min
        batch_size=P.pick(ci=64, cpu=128, gpu=128),
        lr=1e-3,                                    # the VAE recipe's rate, for both players
        grad_clip=None,
        log_every=10,
        seed=0), judge=P.pick(ci="GAN-S", cpu="GAN-B", gpu="GAN-L"))


def _flow_gan(P: Profile) -> Recipe:
    # Notebook 03's flow trained three ways (maximum likelihood, adversarial, both) on one budget (Grover et al.)
    return Recipe("flow-gan", P.name, P.pick(ci="Flow-S", cpu="Flow-S", gpu="Flow-B"), TrainConfig(
        steps=P.pick(ci=30, cpu=600, gpu=6000),     # cpu: ~0.5 min per objective (Flow-S)
        batch_size=64,
        lr=1e-3,
        warmup=P.pick(ci=5, cpu=50, gpu=300),       # ActNorm's data-dependent start needs a gentle first few steps
        grad_clip=50.0,                             # the flow recipe's: clip only log-det spikes
        log_every=10,
        seed=0), judge=P.pick(ci="GAN-S", cpu="GAN-B", gpu="GAN-L"))


# ----------------------------------------------------------------------------------------------------
# Notebook 08: the cartoon faces of minigen.data.make_faces (32 x 32 RGB, five attributes)
# ----------------------------------------------------------------------------------------------------

def _face_judge(P: Profile) -> Recipe:
    # The attribute judge that scores every edit: trained on real faces only
    return Recipe("face-judge", P.name, P.pick(ci="Judge-S", cpu="Judge-B", gpu="Judge-B"), TrainConfig(
        steps=P.pick(ci=150, cpu=800, gpu=3000),    # cpu: >= 98 % on every attribute in well under a minute
        batch_size=P.pick(ci=64, cpu=128, gpu=256),
        lr=2e-3,                                    # a small conv net with warmup, as the autoencoder's
        warmup=50,
        cosine=True,
        seed=0))


def _vae_faces(P: Profile) -> Recipe:
    # Notebook 02's VAE at 32 x 32 x 3 with a Gaussian likelihood: its latent means are what the vectors average
    return Recipe("vae-faces", P.name, P.pick(ci="VAE-F", cpu="VAE-F", gpu="VAE-F-L"), TrainConfig(
        steps=P.pick(ci=100, cpu=2000, gpu=20000),
        batch_size=P.pick(ci=64, cpu=128, gpu=128),
        lr=1e-3,                                    # notebook 02's: the KL term is touchy at higher rates
        warmup=50,
        cosine=True,
        log_every=10,
        seed=0))


def _gan_faces(P: Profile) -> Recipe:
    # Notebook 05's unconditional pair at 32 x 32 x 3: its z directions are found by judging its samples
    return Recipe("gan-faces", P.name, P.pick(ci="GAN-F", cpu="GAN-F", gpu="GAN-F-L"),
                  _gan_train(P, P.pick(ci=100, cpu=3000, gpu=30000)))


def _diffusion_faces(P: Profile) -> Recipe:
    # An unconditional U-Net on faces: DDIM inversion maps a face to the noise it regenerates from
    schedule = DiffusionConfig(schedule="cosine", num_steps=1000, num_classes=None, p_uncond=0.0)
    return Recipe("diffusion-faces", P.name, P.pick(ci="UNet-F", cpu="UNet-F", gpu="UNet-F-L"), TrainConfig(
        steps=P.pick(ci=40, cpu=1500, gpu=20000),
        batch_size=P.pick(ci=32, cpu=64, gpu=256),
        lr=2e-3,                                    # notebook 04's: zero-init branches train fast at 2e-3
        warmup=P.pick(ci=5, cpu=100, gpu=500),
        cosine=True,
        ema_decay=P.pick(ci=0.9, cpu=0.995, gpu=0.9995),
        seed=0), diffusion=schedule)


def _clip(P: Profile) -> Recipe:
    # Notebook 10's tiny CLIP on 20,000 scenes with their full captions (minigen.data.scenes). Measured in notebook
    # 10's cpu run (800 steps, 364 s on the 2-core CPU machine): zero-shot shape/colour/size/position by prompt
    # ensembles 0.98/0.96/1.00/0.97 on held-out single-object scenes; retrieval top-1 0.998 image->text and 0.992
    # text->image among 1,000 held-out scenes
    return Recipe("clip", P.name, P.pick(ci="CLIP-T", cpu="CLIP-S", gpu="CLIP-B"), TrainConfig(
        steps=P.pick(ci=60, cpu=800, gpu=10000),
        batch_size=P.pick(ci=64, cpu=128, gpu=512),  # contrastive: every other pair in the batch is a negative
        lr=P.pick(ci=1e-3, cpu=1e-3, gpu=5e-4),
        warmup=P.pick(ci=10, cpu=100, gpu=500),
        cosine=True,
        weight_decay=0.1,                            # CLIP's; the temperature and norms are kept out by Trainer
        log_every=50,
        seed=0))


def _scene_judge(P: Profile) -> Recipe:
    # Notebook 11's judge of what is at each of a scene's five positions, trained on real scenes of every colour-shape
    # pair (split "any": an instrument must read the held-out pairs the generator is tested on). Measured at cpu
    # (20,000 scenes, 500 steps, 40 s on the 2-core CPU machine): 1,000 test scenes and 1,000 held-out-pair scenes
    # read exactly (recall, precision, count and exact caption all 1.000)
    return Recipe("scene-judge", P.name, P.pick(ci="SceneJudge-S", cpu="SceneJudge-B", gpu="SceneJudge-B"),
                  TrainConfig(
        steps=P.pick(ci=100, cpu=500, gpu=2000),
        batch_size=P.pick(ci=64, cpu=128, gpu=256),
        lr=2e-3,                                    # the face judge's: a small conv net with warmup
        warmup=P.pick(ci=10, cpu=50, gpu=200),
        cosine=True,
        log_every=50,
        seed=0))


def _t2i(P: Profile) -> Recipe:
    # Notebook 11's text-to-image: a caption DiT on 32 x 32 scenes in pixel space, trained by flow matching (notebook
    # 06: straight paths sample well in few steps) around the frozen text tower of recipe("clip"); captions dropped
    # for classifier-free guidance at Ho & Salimans' rate. Measured at cpu (1000 steps, 284 s on the 2-core CPU
    # machine; Euler 20 steps, judged by recipe("scene-judge") on 600 test prompts): single-object prompts drawn
    # exactly right 0.83 at guidance 4 (lr 2e-3: 0.73, lr 1e-3: 0.54); CLIP score 0.86 of real pairs'; two-object
    # prompts exactly right only 0.02. Notebook 11's cpu run (441 s that day, 500 test prompts): 0.87 at guidance 2,
    # the best scale (0.83 at 4), CLIP score 0.90 of real pairs', two-object 0.07, three-object 0.00
    flow = FlowMatchingConfig(t_sampling="logit-normal", captions=True, p_uncond=0.1)
    return Recipe("t2i", P.name, P.pick(ci="DiT-Text-T/4", cpu="DiT-Text-S/4", gpu="DiT-Text-B/4"), TrainConfig(
        steps=P.pick(ci=40, cpu=1000, gpu=20000),
        batch_size=P.pick(ci=32, cpu=64, gpu=256),
        lr=P.pick(ci=2e-3, cpu=3e-3, gpu=3e-4),     # cpu: the best of 1e-3, 2e-3, 3e-3 in the trials above
        warmup=P.pick(ci=5, cpu=66, gpu=1000),      # cpu: 1000 // 15, as measured
        cosine=True,
        ema_decay=P.pick(ci=0.9, cpu=0.995, gpu=0.9999),
        log_every=50,
        seed=0), flow=flow)


def _captioner(P: Profile) -> Recipe:
    # Notebook 10's captioner on 20,000 scenes with their full captions, teacher forcing. Measured in notebook 10's
    # cpu run (800 steps, 374 s on the 2-core CPU machine): greedy captions of 1,000 held-out scenes exactly right
    # 1.00; on held-out colour-shape pairs shape recall 0.93 (blue circles become "blue squares"), the rest 1.00
    return Recipe("captioner", P.name, P.pick(ci="Cap-T", cpu="Cap-S", gpu="Cap-B"), TrainConfig(
        steps=P.pick(ci=60, cpu=800, gpu=10000),
        batch_size=P.pick(ci=64, cpu=128, gpu=512),
        lr=P.pick(ci=1e-3, cpu=1e-3, gpu=5e-4),
        warmup=P.pick(ci=10, cpu=80, gpu=500),      # 800 // 10, as measured
        cosine=True,
        weight_decay=0.1,
        log_every=50,
        seed=0))


def _video(P: Profile, attention: str = "factorized") -> Recipe:
    # Notebook 09's video generator: a DiT on tubelets of moving-shape clips (cpu: 1 x 8 x 8 of 8 frames), conditioned
    # on the first frame and the actions, flow matching with x-prediction. The full-attention twin ("video-full") trains
    # with the same budget for the notebook's comparison. Trials at cpu (the 2-core CPU machine, judged on 200 test
    # clips): 1400 steps of 16 (about 4.7 min) read the right shape in 0.63 of frames, velocity error 1.01 px (copying
    # the first frame: 1.39); batch 16 at 1200 steps beat batch 32 at 600 (same time); lr 3e-3 with width 128 was worse
    # The course's cpu targets: shape and colour kept in >= 0.90 of frames, velocity error clearly below shuffled
    # frames'. Notebook 09's cpu run: colour 0.998, velocity 1.10 px (shuffled 3.74), shape 0.617 (missed)
    name = "video" if attention == "factorized" else "video-full"
    suffix = "" if attention == "factorized" else "-full"
    return Recipe(name, P.name, P.pick(ci="VideoDiT-T", cpu="VideoDiT-S", gpu="VideoDiT-B") + suffix, TrainConfig(
        steps=P.pick(ci=30, cpu=1400, gpu=20000),
        batch_size=P.pick(ci=16, cpu=16, gpu=128),
        lr=P.pick(ci=2e-3, cpu=2e-3, gpu=3e-4),
        warmup=P.pick(ci=3, cpu=90, gpu=1000),
        cosine=True,
        ema_decay=P.pick(ci=None, cpu=0.99, gpu=0.9999),  # cpu: a short run; 0.99 averages the last ~100 steps
        log_every=P.pick(ci=10, cpu=50, gpu=200),
        seed=0))


def _video_full(P: Profile) -> Recipe:
    return _video(P, attention="full")


def _frame_judge(P: Profile) -> Recipe:
    # Notebook 09's judge of a frame's shape, colour and centre, trained on real frames of moving-shape clips
    return Recipe("frame-judge", P.name, P.pick(ci="FrameJudge-S", cpu="FrameJudge-B", gpu="FrameJudge-B"),
                  TrainConfig(
        steps=P.pick(ci=60, cpu=800, gpu=3000),
        batch_size=P.pick(ci=64, cpu=128, gpu=256),
        lr=3e-3,                                    # a small conv net with warmup, as the other judges
        warmup=P.pick(ci=6, cpu=80, gpu=300),
        cosine=True,
        log_every=P.pick(ci=20, cpu=100, gpu=300),
        seed=0))


RECIPES = {"autoencoder": _autoencoder, "mae": _mae, "vae": _vae, "flow": _flow, "diffusion": _diffusion,
           "latent": _latent, "dit": _dit, "dit-fm": _dit_fm, "gan": _gan, "gan-c": _gan_c,
           "diffusion-gan": _diffusion_gan, "vae-gan": _vae_gan, "flow-gan": _flow_gan, "face-judge": _face_judge,
           "vae-faces": _vae_faces, "gan-faces": _gan_faces, "diffusion-faces": _diffusion_faces, "clip": _clip,
           "captioner": _captioner, "scene-judge": _scene_judge, "t2i": _t2i, "video": _video,
           "video-full": _video_full, "frame-judge": _frame_judge}


def recipe(name: str, profile: str | None = None) -> Recipe:
    """The recipe of course model `name` at `profile` (default: the active one, minigen.profile.current())."""
    if name not in RECIPES:
        raise ValueError(f"no recipe named {name!r}; known recipes: {', '.join(RECIPES)}")
    profile = current().name if profile is None else profile
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known profiles: {', '.join(PROFILE_NAMES)}")
    return RECIPES[name](PROFILES[profile])


# ----------------------------------------------------------------------------------------------------
# Data the recipes train on that the plain loop cannot make itself
# ----------------------------------------------------------------------------------------------------

class BinarizedBatches:
    """The VAE's training data for minigen.train: shuffled epochs of images in [-1, 1], each batch binarized
    afresh with the loop's data generator (dynamic binarization: the model never sees the same bits twice,
    which acts as a regularizer). Resumable: its state is the wrapped EpochSampler's."""

    def __init__(self, images: torch.Tensor, seed: int = 0):
        self.epochs = EpochSampler((images,), seed)

    def __call__(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return binarize(self.epochs(batch_size), seed=None, generator=generator)

    def state_dict(self) -> dict:
        return self.epochs.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.epochs.load_state_dict(state)


# ----------------------------------------------------------------------------------------------------
# Course checkpoints (DESIGN section 10): the gpu recipe trained on its data, then measured
# ----------------------------------------------------------------------------------------------------

def _measure_vae(model: VAE, trainer: Trainer) -> tuple[nn.Module, dict]:
    """Held-out bounds on the fixed binarization of the 10k test digits, IWAE with k = 1000 (Burda et al.'s
    k = 5000 moves the bound by a few tenths of a nat at this size; k = 1000 keeps the CPU build within an hour)."""
    scores = evaluate_vae(model, binarize(load_mnist("test").images, seed=0), k=1000)
    return model.eval().cpu(), {"steps": trainer.config.steps, "test_nll_iwae_k1000": round(scores["nll_iwae"], 2),
                                "test_nll_elbo": round(scores["nll_elbo"], 2)}


def _measure_flow(model: Flow, trainer: Trainer) -> tuple[nn.Module, dict]:
    """Bits/dim of the 10k test digits, seeded dequantization."""
    bpd = evaluate_bits_per_dim(model, load_mnist("test").images)
    return model.cpu(), {"steps": trainer.config.steps, "metric": round(bpd, 4), "metric_name": "test bits/dim",
                         "half": False}  # fp32: 2.6 MB, and bits/dim is read off exact log-dets


def _measure_diffusion(model: Diffusion, trainer: Trainer) -> tuple[nn.Module, dict]:
    """The EMA model, Diffusion wrapper and all (its config holds the schedule): classifier-IS of 5000 guided
    DDIM-50 samples, 500 per digit."""
    ema, device = trainer.ema.eval(), trainer.device
    y = torch.arange(5000, device=device) % 10
    x = ddim_sample(ema, ema.schedule, (5000, 1, 28, 28), steps=50, y=y, guidance=2.0, null_label=ema.null_label,
                    clip_x0=1.0, generator=torch.Generator(device).manual_seed(0), device=device)
    return ema.cpu(), {"steps": trainer.config.steps, "metric": round(metrics.classifier_score(x), 3),
                       "metric_name": "classifier-IS, DDIM-50, CFG 2"}


COURSE_CHECKPOINTS = {  # name -> (its training data, made from the train split; how the trained model is measured)
    "vae": (lambda train: BinarizedBatches(train.images), _measure_vae),
    "flow": (lambda train: train.images, _measure_flow),
    "diffusion": (lambda train: (train.images, train.labels), _measure_diffusion),
}


# Course checkpoints a CPU can build (issue #13: each within an hour on the course's 2-core machine, one at a time):
# the notebook's own cpu recipe, run longer, so the checkpoint is the network the student trained, with more steps.
# On a GPU a checkpoint is the gpu recipe's run. Steps: VAE-B ran ~0.1 s a step of 128 on the 2 cores, and its
# measure (IWAE k = 1000 on 10k digits, 10M decodes) took 38 min, so ~20-25 min of training (built 2026-12-07: 62
# min in all); Flow-B ~0.14 s a step of 64, ~25 min for 10k steps (3x the notebook's), and its measure is one pass.
CPU_CHECKPOINT_STEPS = {"vae": 12_000, "flow": 10_000}


def checkpoint_recipe(name: str, device: str | torch.device | None = None) -> Recipe:
    """The recipe course_checkpoint(name) trains on `device` (default minigen.get_device()): recipe(name, "gpu")
    on a GPU; on a CPU, for the names CPU_CHECKPOINT_STEPS lists, recipe(name, "cpu") with that many steps (the
    cosine schedule stretched to match)."""
    device = torch.device(device if device is not None else minigen.get_device())
    if device.type == "cpu" and name in CPU_CHECKPOINT_STEPS:
        r = recipe(name, "cpu")
        return replace(r, train=replace(r.train, steps=CPU_CHECKPOINT_STEPS[name]))
    return recipe(name, "gpu")


def shipped_recipe(name: str, entry: dict) -> Recipe:
    """The recipe a shipped checkpoint was trained with, from its manifest entry (its profile and steps; entries
    written before the profile was recorded are the gpu recipe's)."""
    r = recipe(name, entry.get("profile", "gpu"))
    return replace(r, train=replace(r.train, steps=entry.get("steps", r.train.steps)))


def course_checkpoint(name: str) -> tuple[nn.Module, dict]:
    """Train checkpoint_recipe(name) on the full training split and measure it: the (model, info) that
    `make checkpoints` saves (info names the recipe's profile and preset, so a notebook rebuilds the same
    model). Seeded with the recipe's seed, on minigen.get_device()."""
    if name not in COURSE_CHECKPOINTS:
        raise ValueError(f"no course checkpoint for {name!r}; course checkpoints: {', '.join(COURSE_CHECKPOINTS)}")
    data, measure = COURSE_CHECKPOINTS[name]
    device = minigen.get_device()
    r = checkpoint_recipe(name, device)
    minigen.seed_everything(r.train.seed)
    model = r.build(device)
    trainer = Trainer(model, data(load_mnist("train")), r.train).fit()
    model, info = measure(model, trainer)
    return model, {**info, "profile": r.profile, "preset": r.preset}
