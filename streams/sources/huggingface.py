"""Hugging Face Hub: new public model repositories of chosen organisations → ``model_release``.

Reads ``GET {endpoint}/api/models?author=ORG&sort=createdAt&direction=-1&limit=N`` (newest first; a JSON
array of ``{"_id", "id", "createdAt", "pipeline_tag", "tags", …}``), following the ``Link: <…>; rel="next"``
header page by page until it reaches repositories it has seen (or ``since``).

**One launch, one release.** A launch is usually many repositories created the same day: sizes
(``-8B``, ``-70B``), ``-Instruct``/``-Chat``/``-Base`` variants, quantised copies (``-FP8``, ``-AWQ``,
``-GPTQ``, ``-Int4``…) and GGUF/MLX/ONNX conversions. Repositories of one organisation whose names
reduce to the same *family* (the name without those size, variant and format tokens) and that were
created on the same UTC day are one ``model_release``: its ``model_name`` is the first repository
created, its ``repositories`` field lists the others seen in the same poll, and its ``event_id`` comes
from (organisation, family, day), so a repository of that launch that appears in a later poll adds
nothing. A family released again on another day (an ``-Instruct`` a week later) is a new release.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta, timezone

import orjson

from streams.sources.base import LiveSource, Poll, event_id
from streams.sources.polite import BUDGET, MALFORMED, PoliteClient, SourceError

OVERLAP = timedelta(days=1)  # re-read this much below the newest repository seen (late-listed repos)
KEEP = timedelta(days=3)  # how long the cursor remembers repository ids and launches

VARIANT_TOKENS = {
    "instruct", "chat", "base", "it", "hf", "pt", "sft", "dpo", "rlhf",
    "gguf", "ggml", "awq", "gptq", "exl2", "mlx", "onnx", "openvino", "bnb", "quantized", "quant",
    "fp8", "fp16", "bf16", "fp4", "nvfp4", "mxfp4", "int4", "int8", "4bit", "8bit", "w4a16", "w8a8", "w8a16",
    "dynamic", "original", "safetensors",
}
SIZE_TOKEN = re.compile(r"^(?:\d+(?:\.\d+)?[bmkt]|a\d+(?:\.\d+)?b|\d+x\d+(?:\.\d+)?b|\d+e|e\d+b)$")

MODALITY = {
    "text-generation": "language", "text2text-generation": "language", "fill-mask": "language",
    "question-answering": "language", "summarization": "language", "translation": "language",
    "text-classification": "language", "token-classification": "language", "feature-extraction": "language",
    "sentence-similarity": "language", "zero-shot-classification": "language", "text-ranking": "language",
    "image-text-to-text": "multimodal", "any-to-any": "multimodal", "visual-question-answering": "multimodal",
    "video-text-to-text": "multimodal", "audio-text-to-text": "multimodal", "document-question-answering": "multimodal",
    "image-classification": "vision", "object-detection": "vision", "image-segmentation": "vision",
    "depth-estimation": "vision", "image-feature-extraction": "vision", "zero-shot-image-classification": "vision",
    "mask-generation": "vision", "keypoint-detection": "vision", "video-classification": "video",
    "text-to-image": "image generation", "image-to-image": "image generation", "unconditional-image-generation": "image generation",
    "text-to-video": "video", "image-to-video": "video",
    "automatic-speech-recognition": "speech", "text-to-speech": "speech", "text-to-audio": "audio",
    "audio-classification": "audio", "audio-to-audio": "audio", "voice-activity-detection": "speech",
    "robotics": "robotics", "reinforcement-learning": "games", "tabular-classification": "other",
    "tabular-regression": "other", "time-series-forecasting": "other", "graph-ml": "other",
}


def family(repo_name: str) -> str:
    """``Llama-3.1-70B-Instruct-FP8`` → ``llama-3.1``; ``Qwen2.5-Coder-7B-Instruct-GGUF`` → ``qwen2.5-coder``."""
    tokens = [t for t in re.split(r"[-_ ]+", repo_name.lower()) if t]
    kept = [t for t in tokens if t not in VARIANT_TOKENS and not SIZE_TOKEN.match(t)]
    return "-".join(kept or tokens)


def parse_time(value) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class HuggingFaceSource(LiveSource):
    type = "huggingface"

    async def poll(self, client: PoliteClient, cursor: dict) -> Poll:
        poll = Poll(self.name)
        orgs_state = dict(cursor.get("orgs") or {})
        for org, company in self.config.companies().items():
            try:
                state = await self._poll_org(client, poll, org, company, dict(orgs_state.get(org) or {}))
            except SourceError as exc:
                poll.errors.append(SourceError(exc.kind, f"{org}: {exc}"))
                if exc.kind != BUDGET:
                    continue  # this organisation's cursor stays where it was: the next poll reads it again
                break
            orgs_state[org] = state
        poll.cursor = {"orgs": orgs_state}
        return poll

    async def _poll_org(self, client: PoliteClient, poll: Poll, org: str, company: str, state: dict) -> dict:
        newest = parse_time(state.get("newest"))
        seen: dict[str, str] = dict(state.get("seen") or {})
        rejected_before = set(state.get("rejected") or ())  # malformed items already dead-lettered
        rejected: set[str] = set()
        launches: dict[str, str] = dict(state.get("launches") or {})
        floor = newest - OVERLAP if newest else None
        since = self.config.since
        url = f"{self.config.endpoint.rstrip('/')}/api/models"
        params = {"author": org, "sort": "createdAt", "direction": "-1", "limit": str(self.config.page_size)}
        new: list[tuple[datetime, str, dict]] = []
        first, page_url, budget_hit = True, url, None
        while page_url:
            try:
                page = await client.get(page_url, params=params if first else None, conditional=first)
            except SourceError as exc:
                if exc.kind != BUDGET or first:
                    raise
                budget_hit = exc  # keep what was read: the newest repositories
                break
            if page.not_modified:
                return state
            first, params = False, None
            try:
                items = orjson.loads(page.content)
            except orjson.JSONDecodeError:
                raise SourceError(MALFORMED, f"{page.url} did not answer JSON") from None
            if not isinstance(items, list):
                raise SourceError(MALFORMED, f"{page.url} answered a JSON {type(items).__name__}, not the model list")
            stop = False
            for item in items:
                repo = (item.get("id") or item.get("modelId")) if isinstance(item, dict) else None
                created = parse_time(item.get("createdAt")) if isinstance(item, dict) else None
                if not isinstance(repo, str) or "/" not in repo or created is None:
                    poll.fetched += 1
                    key = repo if isinstance(repo, str) else hashlib.sha256(orjson.dumps(item)).hexdigest()[:32]
                    rejected.add(key)
                    if key in rejected_before:  # sent to the dead letters once already
                        poll.unchanged += 1
                        continue
                    origin = f"{self.name}:{repo if isinstance(repo, str) else org}"
                    if isinstance(item, dict) and isinstance(repo, str):
                        # the pipeline's validator names what is wrong (occurred_at)
                        poll.malformed(origin, {"kind": "model_release", "company": company, "model_name": repo,
                                                "occurred_at": item.get("createdAt"), "source": "huggingface"},
                                       "no readable createdAt")
                    else:
                        poll.malformed(origin, orjson.dumps(item), "not a model repository object")
                    continue
                if (since and created.date() < since) or (floor and created < floor):
                    stop = True  # newest first: everything after this is older
                    break
                poll.fetched += 1
                if repo in seen:
                    poll.unchanged += 1
                    continue
                new.append((created, repo, item))
            page_url = None if stop else page.next_link()
        if budget_hit is not None:
            oldest = min((c for c, _, _ in new), default=None)
            poll.errors.append(SourceError(BUDGET, f"{org}: {budget_hit}; repositories created before "
                                                   f"{iso(oldest) if oldest else 'the first page'} were not read"))
        self._launches(poll, org, company, new, seen, launches)
        read_to = max([c for c, _, _ in new] + ([newest] if newest else []), default=None)
        if budget_hit is None:
            newest = read_to
        else:  # the cursor stays where it was: the next poll reads down to it again, past what this one could
            # not reach (what it did read is in ``seen``, so it is not sent twice); the unread pages' rejects stay
            rejected |= rejected_before
        if read_to is None:
            return {"newest": None, "seen": {}, "launches": {}, "rejected": sorted(rejected)}
        horizon = read_to - KEEP
        return {"newest": iso(newest) if newest else None, "rejected": sorted(rejected),
                "seen": {r: t for r, t in seen.items() if parse_time(t) and parse_time(t) >= horizon},
                "launches": {k: t for k, t in launches.items() if parse_time(t) and parse_time(t) >= horizon}}

    def _launches(self, poll: Poll, org: str, company: str, new: list[tuple[datetime, str, dict]],
                  seen: dict[str, str], launches: dict[str, str]) -> None:
        groups: dict[str, list[tuple[datetime, str, dict]]] = {}
        for created, repo, item in sorted(new, key=lambda x: (x[0], x[1])):
            seen[repo] = iso(created)
            key = f"{org.lower()}/{family(repo.split('/', 1)[1])}/{created.date().isoformat()}"
            if key in launches:
                poll.unchanged += 1  # another repository of a launch already announced
                continue
            groups.setdefault(key, []).append((created, repo, item))
        for key, members in groups.items():
            created, repo, _ = members[0]
            launches[key] = iso(created)
            tag = next((m[2].get("pipeline_tag") for m in members if isinstance(m[2].get("pipeline_tag"), str)), None)
            event = {"event_id": event_id("hf", key), "kind": "model_release", "company": company,
                     "occurred_at": iso(created), "source": "huggingface", "model_name": repo,
                     "open_weights": True, "repositories": [m[1] for m in members]}
            if tag and MODALITY.get(tag):
                event["modality"] = MODALITY[tag]
            poll.unchanged += len(members) - 1
            poll.event(f"{self.name}:{repo}", event)
