"""A local Hugging Face causal LM as the teacher (translate / summarize).

    teacher: {backend: hf, model: /path/to/local/model}    # any AutoModelForCausalLM folder

Nothing is downloaded: the folder must hold the weights and tokenizer. Inputs are asked in
batches (left padding, greedy, `max_new_tokens` of the student spec), with the tokenizer's
chat template when it has one (system: the task's instruction) and `INSTRUCTION\\n\\nINPUT\\n`
otherwise. Answers go to the same sqlite cache as the API teachers, so a rerun or a
resumed run asks nothing twice.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from nanoforge.data import Record
from nanoforge.errors import NanoforgeError, TeacherError
from nanoforge.prompts import student_instruction
from nanoforge.task import TaskSpec
from nanoforge.teachers.base import Answer, Progress, TeacherStats
from nanoforge.teachers.cache import AnswerCache, open_cache

BATCH = 8


class HFTeacher:
    name = "hf"

    def __init__(self, spec: TaskSpec, cache_path: Path | None = None):
        if spec.kind not in ("translate", "summarize"):
            raise NanoforgeError(f"teacher.backend hf: answers text tasks (translate, summarize), not {spec.kind}")
        folder = Path(spec.teacher.model or "").expanduser()
        if not (folder / "config.json").is_file():
            raise NanoforgeError(f"teacher.model: {folder} is not a local Hugging Face model folder (config.json)")
        self.spec, self.folder = spec, folder
        self.stats = TeacherStats(backend="hf", model=str(folder))
        self.cache = open_cache(cache_path)
        self._model = self._tok = None

    def _load(self):
        if self._model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                self._tok = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True, padding_side="left")
                self._model = AutoModelForCausalLM.from_pretrained(str(self.folder), local_files_only=True).eval()
            except (OSError, ValueError) as e:
                raise TeacherError(f"teacher.model: cannot load {self.folder} ({str(e).splitlines()[0][:160]})") from None
            if self._tok.pad_token is None:
                self._tok.pad_token = self._tok.eos_token or self._tok.unk_token
        return self._model, self._tok

    def prompt(self, text: str) -> str:
        tok = self._load()[1]
        instruction = student_instruction(self.spec)
        if tok.chat_template:
            return tok.apply_chat_template([{"role": "system", "content": instruction},
                                            {"role": "user", "content": text}],
                                           tokenize=False, add_generation_prompt=True)
        return f"{instruction}\n\n{text}\n"

    def label(self, records: list[Record], progress: Progress | None = None) -> list[Answer]:
        import torch

        start = time.perf_counter()
        params = {"max_new_tokens": self.spec.student.max_new_tokens, "greedy": True}
        out: dict[str, Answer] = {}
        todo = []
        counts = Counter(r.input for r in records)  # a repeated input is asked once
        for text in counts:
            key = AnswerCache.make_key(str(self.folder), [{"user": text}], params)
            hit = self.cache.get(key) if self.cache is not None else None
            if hit is not None:  # greedy: an empty answer would come back empty, so it is cached too
                out[text] = Answer(rejected=True) if hit.get("rejected") else Answer(output=hit["output"])
                self.stats.cached += counts[text]
            else:
                todo.append(text)
        if progress and out:
            progress(sum(counts[t] for t in out))
        model, tok = self._load() if todo else (None, None)
        for s in range(0, len(todo), BATCH):
            chunk = todo[s : s + BATCH]
            enc = tok([self.prompt(t) for t in chunk], return_tensors="pt", padding=True, add_special_tokens=False,
                      return_token_type_ids=False)
            with torch.no_grad():
                gen = model.generate(**enc, max_new_tokens=params["max_new_tokens"], do_sample=False,
                                     pad_token_id=tok.pad_token_id)
            self.stats.api_calls += 1
            for text, ids in zip(chunk, gen[:, enc["input_ids"].shape[1]:]):
                answer = tok.decode(ids, skip_special_tokens=True).strip()
                self.stats.tokens_in += int(enc["attention_mask"].sum()) // len(chunk)
                self.stats.tokens_out += int((ids != tok.pad_token_id).sum())
                out[text] = Answer(output=answer) if answer else Answer(rejected=True)
                self.stats.rejected += not answer
                if self.cache is not None:
                    self.cache.put(AnswerCache.make_key(str(self.folder), [{"user": text}], params),
                                   {"output": answer} if answer else {"rejected": True})
            if progress:
                progress(sum(counts[t] for t in chunk))
        self.stats.requests += len(records)
        self.stats.seconds += time.perf_counter() - start
        return [out[r.input] for r in records]

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
