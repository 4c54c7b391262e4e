"""
What the bench's stand-ins weigh at full size: the pinned upstream flavor's wheels (size and
file count, by project), its 57 model files (by the names upstream v0.1.6's models_data.py
gives them), the CLIP weights and the app's repository.

Names, versions and the dependency graph come from tests/fixtures/flavors/stand-ins.json (the
real metadata); the names and the count of the model files from upstream's models_data.py at
v0.1.6 (537cff8, read from a snapshot of VisoMaster-Fusion, whose history holds upstream's).
The SIZES are not read from the real files (the real indexes and GitHub are unreachable from
here): they are estimates of the Linux x86_64 / CPython 3.10 wheels and of the release assets,
in MB (10^6 bytes). The wheels' estimates add up to the issue's ~5.6 GB; the models' are
scaled to the issue's 9.6 GB (``MODELS_TOTAL``). File counts are rough too (what a wheel
unpacks: torch's headers, onnx's test data, scipy's and PySide6's modules), kept because
unpacking many files costs time on one core whatever their size.
"""

from __future__ import annotations

MB = 1_000_000

# project (PEP 503 name) -> (wheel MB, files in the wheel); unlisted projects: DEFAULT_WHEEL.
WHEELS: dict[str, tuple[float, int]] = {
    "torch": (797.0, 12000),
    "torchvision": (7.0, 250),
    "torchaudio": (3.4, 180),
    "triton": (209.4, 900),
    "nvidia-cublas-cu12": (363.4, 30),
    "nvidia-cuda-cupti-cu12": (13.8, 80),
    "nvidia-cuda-nvrtc-cu12": (24.6, 15),
    "nvidia-cuda-runtime-cu12": (0.9, 50),
    "nvidia-cudnn-cu12": (664.8, 40),
    "nvidia-cufft-cu12": (211.5, 20),
    "nvidia-curand-cu12": (56.3, 20),
    "nvidia-cusolver-cu12": (127.9, 20),
    "nvidia-cusparse-cu12": (207.5, 20),
    "nvidia-nccl-cu12": (176.2, 15),
    "nvidia-nvjitlink-cu12": (21.1, 15),
    "nvidia-nvtx-cu12": (0.1, 40),
    "tensorrt": (0.02, 8),
    "tensorrt-cu12": (0.02, 8),
    "tensorrt-cu12-bindings": (1.2, 10),
    "tensorrt-cu12-libs": (2000.0, 12),
    "onnxruntime-gpu": (283.0, 90),
    "onnx": (15.9, 3000),
    "onnxsim": (2.2, 20),
    "opencv-python": (62.5, 120),
    "numpy": (18.2, 1000),
    "scipy": (37.7, 2200),
    "scikit-image": (13.9, 1000),
    "pillow": (3.4, 100),
    "pyside6": (0.5, 100),
    "pyside6-essentials": (95.0, 1500),
    "pyside6-addons": (166.0, 1200),
    "shiboken6": (0.2, 30),
    "sympy": (6.3, 1400),
    "networkx": (1.7, 600),
    "kornia": (1.1, 350),
    "kornia-rs": (2.8, 15),
    "pywavelets": (4.5, 200),
    "mpmath": (0.5, 70),
    "pygments": (1.2, 330),
    "qdarkstyle": (0.85, 300),
    "pyqtdarktheme": (0.9, 60),
    "regex": (0.8, 15),
    "protobuf": (0.3, 80),
    "numexpr": (0.4, 40),
    "psutil": (0.3, 40),
    "rich": (0.24, 80),
    "imageio": (0.3, 60),
    "tifffile": (0.23, 20),
}
DEFAULT_WHEEL = (0.1, 20)

# The 57 model files of upstream v0.1.6's models_list, in its order: (model_name, path under
# the checkout, release tag of its URL, estimated MB before MODELS_TOTAL's scaling).
MODELS: tuple[tuple[str, str, str, float], ...] = (
    ("Inswapper128", "model_assets/inswapper_128.fp16.onnx", "v0.1.0", 277),
    ("InStyleSwapper256 Version A", "model_assets/InStyleSwapper256_Version_A.fp16.onnx",
     "v0.1.0", 277),
    ("InStyleSwapper256 Version B", "model_assets/InStyleSwapper256_Version_B.fp16.onnx",
     "v0.1.0", 277),
    ("InStyleSwapper256 Version C", "model_assets/InStyleSwapper256_Version_C.fp16.onnx",
     "v0.1.0", 277),
    ("SimSwap512", "model_assets/simswap_512_unoff.onnx", "v0.1.0", 220),
    ("GhostFacev1", "model_assets/ghost_unet_1_block.onnx", "v0.1.0", 325),
    ("GhostFacev2", "model_assets/ghost_unet_2_block.onnx", "v0.1.0", 333),
    ("GhostFacev3", "model_assets/ghost_unet_3_block.onnx", "v0.1.0", 340),
    ("CSCS", "model_assets/cscs_256.onnx", "v0.1.0", 150),
    ("RetinaFace", "model_assets/det_10g.onnx", "v0.1.0", 16.9),
    ("SCRFD2.5g", "model_assets/scrfd_2.5g_bnkps.onnx", "v0.1.0", 3.3),
    ("YoloFace8n", "model_assets/yoloface_8n.onnx", "v0.1.0", 12),
    ("YunetN", "model_assets/yunet_n_640_640.onnx", "v0.1.0", 0.3),
    ("FaceLandmark5", "model_assets/res50.onnx", "v0.1.0", 104),
    ("FaceLandmark68", "model_assets/2dfan4.onnx", "v0.1.0", 98),
    ("FaceLandmark3d68", "model_assets/1k3d68.onnx", "v0.1.0", 143),
    ("FaceLandmark98", "model_assets/peppapig_teacher_Nx3x256x256.onnx", "v0.1.0", 46),
    ("FaceLandmark106", "model_assets/2d106det.onnx", "v0.1.0", 5),
    ("FaceLandmark203", "model_assets/landmark.onnx", "v0.1.0", 2),
    ("FaceLandmark478", "model_assets/face_landmarks_detector_Nx3x256x256.onnx", "v0.1.0", 2.5),
    ("FaceBlendShapes", "model_assets/face_blendshapes_Nx146x2.onnx", "v0.1.0", 1.8),
    ("Inswapper128ArcFace", "model_assets/w600k_r50.onnx", "v0.1.0", 174),
    ("SimSwapArcFace", "model_assets/simswap_arcface_model.onnx", "v0.1.0", 220),
    ("GhostArcFace", "model_assets/ghost_arcface_backbone.onnx", "v0.1.0", 170),
    ("CSCSArcFace", "model_assets/cscs_arcface_model.onnx", "v0.1.0", 250),
    ("CSCSIDArcFace", "model_assets/cscs_id_adapter.onnx", "v0.1.0", 130),
    ("GFPGANv1.4", "model_assets/GFPGANv1.4.onnx", "v0.1.0", 340),
    ("GPENBFR256", "model_assets/GPEN-BFR-256.onnx", "v0.1.0", 76),
    ("GPENBFR512", "model_assets/GPEN-BFR-512.onnx", "v0.1.0", 285),
    ("GPENBFR1024", "model_assets/GPEN-BFR-1024.onnx", "v0.1.0", 285),
    ("GPENBFR2048", "model_assets/GPEN-BFR-2048.onnx", "v0.1.0", 300),
    ("CodeFormer", "model_assets/codeformer_fp16.onnx", "v0.1.0", 188),
    ("VQFRv2", "model_assets/VQFRv2.fp16.onnx", "v0.1.0", 180),
    ("RestoreFormerPlusPlus", "model_assets/RestoreFormerPlusPlus.fp16.onnx", "v0.1.0", 150),
    ("RealEsrganx2Plus", "model_assets/RealESRGAN_x2plus.fp16.onnx", "v0.1.0", 33),
    ("RealEsrganx4Plus", "model_assets/RealESRGAN_x4plus.fp16.onnx", "v0.1.0", 33),
    ("RealEsrx4v3", "model_assets/realesr-general-x4v3.onnx", "v0.1.0", 5),
    ("BSRGANx2", "model_assets/BSRGANx2.fp16.onnx", "v0.1.0", 33),
    ("BSRGANx4", "model_assets/BSRGANx4.fp16.onnx", "v0.1.0", 33),
    ("UltraSharpx4", "model_assets/4x-UltraSharp.fp16.onnx", "v0.1.0", 33),
    ("UltraMixx4", "model_assets/4x-UltraMix_Smooth.fp16.onnx", "v0.1.0", 33),
    ("DeoldifyArt", "model_assets/ColorizeArtistic.fp16.onnx", "v0.1.0", 128),
    ("DeoldifyStable", "model_assets/ColorizeStable.fp16.onnx", "v0.1.0", 437),
    ("DeoldifyVideo", "model_assets/ColorizeVideo.fp16.onnx", "v0.1.0", 437),
    ("DDColorArt", "model_assets/ddcolor_artistic.onnx", "v0.1.0", 912),
    ("DDcolor", "model_assets/ddcolor.onnx", "v0.1.0", 912),
    ("Occluder", "model_assets/occluder.onnx", "v0.1.0", 50),
    ("XSeg", "model_assets/XSeg_model.onnx", "v0.1.0", 70),
    ("FaceParser", "model_assets/faceparser_resnet34.onnx", "v0.1.0", 90),
    ("RD64ClipText", "model_assets/rd64-uni-refined.pth", "v0.1.0", 4.5),
    ("LivePortraitMotionExtractor", "model_assets/liveportrait_onnx/motion_extractor.onnx",
     "v0.1.0_lp", 112),
    ("LivePortraitAppearanceFeatureExtractor",
     "model_assets/liveportrait_onnx/appearance_feature_extractor.onnx", "v0.1.0_lp", 3.4),
    ("LivePortraitStitchingEye", "model_assets/liveportrait_onnx/stitching_eye.onnx",
     "v0.1.0_lp", 0.3),
    ("LivePortraitStitchingLip", "model_assets/liveportrait_onnx/stitching_lip.onnx",
     "v0.1.0_lp", 0.3),
    ("LivePortraitStitching", "model_assets/liveportrait_onnx/stitching.onnx", "v0.1.0_lp", 0.3),
    ("LivePortraitWarpingSpade", "model_assets/liveportrait_onnx/warping_spade.onnx",
     "v0.1.0_lp", 211),
    ("LivePortraitWarpingSpadeFix", "model_assets/liveportrait_onnx/warping_spade-fix.onnx",
     "v0.1.0_lp", 211),
)
# The figure for the 57 files together (MB): the estimates above are scaled to it.
MODELS_TOTAL = 9600.0
# ViT-B-16.pt (openai/CLIP): 351 MB.
CLIP_MB = 351.0
CLIP_NAME = "ViT-B-16.pt"
# The app's repository at v0.1.6: 123 tracked files, 13.1 MB; its history (432 commits) packs
# to ~11.7 MB (measured in the snapshot, a few objects missing there).
REPO_FILES = 123
REPO_MB = 11.7
REPO_COMMITS = 12
REF = "v0.1.6"


def wheel_size(project: str) -> tuple[float, int]:
    """(MB, files) of a project's wheel at full size."""
    return WHEELS.get(project, DEFAULT_WHEEL)


def model_sizes() -> list[float]:
    """Each model's full size in MB, the estimates scaled to MODELS_TOTAL."""
    estimated = sum(size for *_, size in MODELS)
    return [size * MODELS_TOTAL / estimated for *_, size in MODELS]
