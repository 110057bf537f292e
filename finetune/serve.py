"""A local web page to try a trained run: drop images (or, for a text run, type a text), see the top classes
and where the network looked (Grad-CAM; for texts, the words that spoke for or against the class).

Built on Flask (its development server is enough for one person trying a model on
their own machine). Nothing leaves the machine: the page loads no outside
resources, uploads are decoded in a temporary folder that is deleted at once,
and requests whose ``Host`` header is not the address being served are refused
(a defence against DNS rebinding). Uploads go through the same checks as
training data (size on disk, pixel count, a full decode).

Example:
    >>> app = create_app("runs/cells")          # doctest: +SKIP
    >>> app.test_client().get("/api/info").json["classes"]   # doctest: +SKIP
    ['defective', 'functional']
"""

from __future__ import annotations

import base64
import html
import io
import ipaddress
import tempfile
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

MAX_UPLOAD_MB = 20
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


class Predictor:
    """A run folder's model, ready to answer one image at a time (thread-safe).

    Args:
        run_dir: A folder written by ``finetune train``.
        top_k: How many classes to return per image.
    """

    def __init__(self, run_dir: str | Path, *, top_k: int = 3):
        from .detection_runs import is_detection_run, load_detector
        from .evaluation.predict import inference_fn
        from .runs import load_run

        self.run_dir = Path(run_dir)
        self._lock = threading.Lock()
        if is_detection_run(run_dir):
            self.kind, self.detector = "boxes", load_detector(run_dir)
            self.class_names = self.detector.class_names
            return
        self.run = load_run(run_dir)
        self.kind = self.run.spec.kind
        self.model, self.spec, self.class_names = self.run.model, self.run.spec, self.run.classes
        self.thresholds = self.run.decision.thresholds
        self.multi_label = self.thresholds is not None
        self.ordinal = self.run.decision.ordinal
        self._forward = inference_fn(self.model)  # traced once, for every request
        self.top_k = max(1, min(top_k, len(self.class_names)))
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        if self.kind == "boxes":
            return {"run": self.run_dir.name, "kind": "boxes", "classes": self.class_names,
                    "image_size": self.detector.input_size, "resize": "squash", "multi_label": False}
        if self.kind == "text":
            return {"run": self.run_dir.name, "kind": "text", "classes": self.class_names,
                    "sequence_length": self.spec.sequence_length, "multi_label": self.multi_label}
        return {"run": self.run_dir.name, "kind": "image", "classes": self.class_names, "image_size": self.spec.size,
                "resize": self.spec.resize, "multi_label": self.multi_label}

    def predict_text(self, text: str) -> dict[str, Any]:
        """Top-k classes of ``text`` and each word's occlusion score (see :mod:`finetune.evaluation.explain_text`).

        Raises:
            DataError: the text is empty.
        """
        from .data import DataError
        from .evaluation.explain_text import occlusion

        if not text.strip():
            raise DataError("the text is empty: type or paste a text")
        with self._lock:
            found = occlusion(self.model, self.spec, text, forward=self._forward)
        answer = self._decided(found.probabilities)
        answer.update(text=text[:200], words=found.to_dict(self.class_names))
        return answer

    def _decided(self, probs: np.ndarray) -> dict[str, Any]:
        """The top classes of ``probs``, with the run's multi-label thresholds or ordinal rule applied."""
        from .evaluation.metrics import labels_over

        order = np.argsort(-probs)[: self.top_k]
        answer: dict[str, Any] = {
            "top": [{"label": self.class_names[i], "probability": float(probs[i])} for i in order]}
        if self.multi_label:
            answer["labels"] = labels_over(probs, self.class_names, self.thresholds)
        if self.ordinal is not None:
            from .training.ordinal import expected_grade

            answer["decision"] = {"label": self.class_names[int(self.ordinal.classes(probs[None])[0])],
                                  "expected_grade": float(expected_grade(probs[None])[0])}
        return answer

    def predict_file(self, path: str, name: str) -> dict[str, Any]:
        """Top-k classes (and for multi-label, the labels over their thresholds) and a Grad-CAM overlay of ``path``.

        Raises:
            DataError: the file is not a usable image; the message names ``name`` and the reason.
        """
        from .data import DataError
        from .data.images import decode_checked
        from .evaluation.explain import CannotExplain, grad_cam, overlay
        from .evaluation.predict import as_class_probs

        if self.kind == "boxes":
            return self.detect_file(path, name)
        if self.kind != "image":
            raise DataError(f"{name}: this run classifies texts; send a text (form field `text`)")
        pixels, reason = decode_checked(path, self.spec.size, **self.spec.fit_options)
        if pixels is None:
            raise DataError(f"{name}: {reason}")
        image = pixels.astype(np.float32)
        with self._lock:
            try:  # Grad-CAM's forward pass gives the probabilities too
                explanation = grad_cam(self.model, image[None])[0]
                probs = explanation.probabilities
            except CannotExplain as err:
                explanation, why = None, str(err)
                probs = as_class_probs(self._forward(image[None]))[0]
        answer = {"file": name, **self._decided(probs), "image": _png_data_url(pixels)}
        if explanation is not None:
            answer["gradcam"] = {"label": self.class_names[explanation.class_index],
                                 "image": _png_data_url(overlay(pixels, explanation))}
        else:
            answer["gradcam"] = {"error": why}
        return answer


    def detect_file(self, path: str, name: str, score: float = 0.25) -> dict[str, Any]:
        """The boxes in ``path`` (a detection run): each as a row (label, score, corners in the image's pixels) and
        all drawn on the image.

        Raises:
            DataError: the file is not a usable image.
        """
        from .data import DataError
        from .data.images import check_image, load_image
        from .evaluation.boxes import draw_detections

        reason = check_image(path)
        if reason is not None:
            raise DataError(f"{name}: {reason}")
        image = load_image(path)
        with self._lock:
            found = self.detector.detect([image], score=score)[0]
        return {"file": name, "image": _png_data_url(np.asarray(draw_detections(image, found))),
                "caption": f"{len(found)} box{'es' if len(found) != 1 else ''} over {score:g}",
                "top": [{"label": f"{d.label} [{', '.join(f'{v:.0f}' for v in d.box)}]", "probability": d.score}
                        for d in found],
                "boxes": [{"label": d.label, "score": d.score, "box": list(d.box)} for d in found]}


def create_app(run_dir: str | Path, *, top_k: int = 3, max_upload_mb: float = MAX_UPLOAD_MB,
               hosts: tuple[str, ...] = LOOPBACK_NAMES):
    """The Flask app serving the page (``/``), ``/api/info`` and ``/api/predict`` (POST, form field ``image``).

    Args:
        run_dir: A folder written by ``finetune train``.
        top_k: Classes shown per image.
        max_upload_mb: Larger uploads are refused (413) before they are read.
        hosts: Host names the ``Host`` header may carry (any port); others get 400.
    """
    from flask import Flask, jsonify, request
    from werkzeug.exceptions import HTTPException
    from werkzeug.utils import secure_filename

    from .data import DataError

    predictor = Predictor(run_dir, top_k=top_k)
    app = Flask("finetune.serve")
    app.config.update(MAX_CONTENT_LENGTH=int(max_upload_mb * 1024 * 1024), TRUSTED_HOSTS=list(hosts))
    page = resources.files("finetune").joinpath("resources/serve.html").read_text(encoding="utf-8")

    @app.before_request
    def check_host():
        request.host  # raises SecurityError (400) when the Host header is not one of `hosts`

    @app.get("/")
    def index():
        return page.replace("{{run}}", html.escape(predictor.run_dir.name)), 200, {
            "Content-Type": "text/html; charset=utf-8"}

    @app.get("/api/info")
    def info():
        return jsonify(predictor.info())

    @app.post("/api/predict")
    def predict():
        if predictor.kind == "text":
            text = request.form.get("text", (request.get_json(silent=True) or {}).get("text"))
            if not isinstance(text, str):
                return jsonify(error="send one text in the form field `text` (or JSON {\"text\": ...})"), 400
            try:
                return jsonify(predictor.predict_text(text))
            except DataError as err:
                return jsonify(error=str(err)), 400
        upload = request.files.get("image")
        if upload is None or not upload.filename:
            return jsonify(error="send one image in the form field `image`"), 400
        name = secure_filename(upload.filename) or "upload"
        with tempfile.TemporaryDirectory(prefix="finetune-serve-") as folder:
            path = str(Path(folder) / name)
            upload.save(path)
            try:
                return jsonify(predictor.predict_file(path, upload.filename))
            except DataError as err:
                return jsonify(error=str(err)), 400

    @app.errorhandler(HTTPException)
    def http_error(err):
        message = (f"the upload is over {max_upload_mb:g} MB; send a smaller image" if err.code == 413
                   else err.description)
        return jsonify(error=message), err.code

    @app.errorhandler(Exception)
    def server_error(err):
        app.logger.exception("prediction failed")
        return jsonify(error=f"the server failed on this request: {type(err).__name__}: {err}"), 500

    @app.after_request
    def headers(response):
        response.headers["Content-Security-Policy"] = ("default-src 'none'; img-src 'self' data:; "
                                                       "style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                                                       "connect-src 'self'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    app.predictor = predictor
    return app


def exposure_warning(host: str) -> str | None:
    """A warning when ``host`` is not a loopback address (the page is then reachable from other machines)."""
    if host in LOOPBACK_NAMES:
        return None
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return None
    except ValueError:
        pass
    return (f"serving on {host}: anyone who can reach this machine can upload images to the model; "
            "use the default --host 127.0.0.1 unless you mean to share it")


def machine_names() -> tuple[str, ...]:
    """This machine's host names and addresses, as a browser on the network would put them in ``Host``."""
    import socket

    names = {socket.gethostname(), socket.getfqdn()}
    try:
        names.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    return tuple(sorted(names))


def _png_data_url(pixels: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

