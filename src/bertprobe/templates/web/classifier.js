// The classifier of a `bertprobe export --web` folder, run in the browser: the folder's
// tokenizer.json (tokenizers.js), model.onnx (onnxruntime-web, WASM) and, for a model that votes
// with a TF-IDF model, tfidf.json, computed as bertprobe.export.ExportedClassifier computes them
// in Python. No DOM here: index.html shows what this computes.
//
// The parts, as in Python:
// - tokens: tokenizer.json truncates at the model's max length; a chunk model's text is cut into
//   windows of that length sharing `stride` tokens, as the Rust tokenizer's truncation with a
//   stride cuts a text into its encoding and its `overflowing` encodings (windowsOf below).
// - the graph: input_ids and attention_mask (int64 [row, seq], padded to the longest row of the
//   batch) and, for a chunk model, windows (int64 [text, row], 1 where the row is the text's);
//   out come probabilities (float32 [text, class]).
// - the vote: TfidfVote (bertprobe/export.py) to the letter, in float64.

export class WebClassifier {
  /**
   * @param {object} ort onnxruntime-web's module
   * @param {Function} Tokenizer tokenizers.js's Tokenizer class
   * @param {string} base the folder's URL (ends with "/")
   */
  static async load(ort, Tokenizer, base) {
    const json = async (name) => {
      const response = await fetch(new URL(name, base));
      if (!response.ok) throw new Error(`${name}: ${response.status} ${response.statusText}`);
      return response.json();
    };
    const card = await json("card.json");
    const tokenizerJson = await json("tokenizer.json");
    const vote = card.vote ? await json(card.vote.file) : null;
    const model = await fetch(new URL("model.onnx", base));
    if (!model.ok) throw new Error(`model.onnx: ${model.status} ${model.statusText}`);
    const session = await ort.InferenceSession.create(new Uint8Array(await model.arrayBuffer()), {
      executionProviders: ["wasm"],
    });
    return new WebClassifier(ort, new Tokenizer(tokenizerJson, {}), tokenizerJson, card, session,
      vote);
  }

  constructor(ort, tokenizer, tokenizerJson, card, session, vote) {
    this.ort = ort;
    this.tokenizer = tokenizer;
    this.card = card;
    this.session = session;
    this.classes = card.classes.map(String);
    // How probabilities become labels: the card's decision (bertprobe.heads.decision), or for
    // an export written before it, the label-set flag and the thresholds as a list.
    const decision = card.decision ?? (card.multi_label
      ? { rule: "per-label", thresholds: Object.fromEntries(
        this.classes.map((c, j) => [c, card.thresholds[j]])) }
      : { rule: "argmax" });
    this.rule = decision.rule;
    this.multiLabel = this.rule === "per-label";
    this.thresholds = this.multiLabel ? this.classes.map((c) => decision.thresholds[c]) : null;
    this.threshold = this.rule === "threshold" ? decision.threshold : null;
    this.chunked = card.long === "chunk";
    const truncation = tokenizerJson.truncation;
    this.maxLength = truncation.max_length;
    this.stride = truncation.stride ?? 0;
    this.fromLeft = truncation.direction === "Left";
    this.padId = tokenizerJson.padding?.pad_id ?? 0;
    this.vocab = tokenizer.get_vocab(true);
    this.unkId = tokenizer.model.unk_token_id;
    // The special tokens the post-processor adds to one sequence ([CLS] and [SEP]: 2).
    this.added = this.withSpecials([]).length;
    this.body = this.maxLength - this.added;
    this.vote = vote ? new TfidfVote(vote) : null;
  }

  /** A token sequence with the post-processor's special tokens, as ids. */
  withSpecials(tokens) {
    const processed = this.tokenizer.post_processor
      ? this.tokenizer.post_processor(tokens, null, true).tokens
      : tokens;
    return processed.map((t) => this.vocab.get(t) ?? this.unkId);
  }

  /**
   * A text's windows as ids, special tokens included: one for a text that fits, else the
   * truncated one alone (a model that truncates) or all of them (a chunk model). The Rust
   * tokenizer's Encoding::truncate: parts of `body` tokens whose starts are `body - stride`
   * apart, until one reaches the end (from the end, for truncation from the left).
   */
  windowsOf(text) {
    const tokens = this.tokenizer.tokenize(text, { add_special_tokens: false });
    const n = tokens.length;
    const parts = [];
    if (n <= this.body) {
      parts.push([0, n]);
    } else {
      const step = this.body - this.stride;
      if (!this.fromLeft) {
        for (let start = 0; ; start += step) {
          const stop = Math.min(start + this.body, n);
          parts.push([start, stop]);
          if (stop === n) break;
        }
      } else {
        for (let stop = n; ; stop -= step) {
          const start = Math.max(stop - this.body, 0);
          parts.push([start, stop]);
          if (start === 0) break;
        }
      }
    }
    const kept = this.chunked ? parts : parts.slice(0, 1);
    return {
      tokens: n + this.added,
      windows: kept.map(([start, stop]) => this.withSpecials(tokens.slice(start, stop))),
      cut: parts.length > 1,
    };
  }

  /** What the model does with a text: its length in tokens and how it is read. */
  describe(text) {
    const { tokens, windows, cut } = this.windowsOf(text);
    if (!cut) return { tokens, read: "whole", windows: 1, note: "" };
    if (!this.chunked) {
      return {
        tokens, read: "truncated", windows: 1,
        note: `${tokens} tokens: the model reads the first ${this.maxLength} ` +
          `(truncated, as bertprobe predict does)`,
      };
    }
    return {
      tokens, read: "windowed", windows: windows.length,
      note: `${tokens} tokens: read in ${windows.length} windows of up to ${this.maxLength} ` +
        `tokens overlapping by ${this.stride}, their vectors pooled by ` +
        `${this.card.window_pool}`,
    };
  }

  /** Probabilities, one row (Float64Array) a text, in the order of `classes`. */
  async predictProba(texts, batchSize = 32) {
    const rows = [];
    for (let start = 0; start < texts.length; start += batchSize) {
      const batch = texts.slice(start, start + batchSize);
      const graph = await this.run(batch);
      const voted = this.vote ? this.vote.predictProba(batch) : null;
      const k = this.classes.length;
      for (let i = 0; i < batch.length; i++) {
        const row = new Float64Array(k);
        for (let j = 0; j < k; j++) {
          const p = graph[i * k + j];
          // VotingProbe's soft vote: the mean of both models' probabilities.
          row[j] = voted ? (p + voted[i][j]) / 2 : p;
        }
        rows.push(row);
      }
    }
    return rows;
  }

  /** One batch of texts through the graph: float32 [text, class], flat. */
  async run(texts) {
    const ort = this.ort;
    const owner = [];
    const windows = [];
    texts.forEach((text, i) => {
      for (const w of this.windowsOf(text).windows) {
        windows.push(w);
        owner.push(i);
      }
    });
    const seq = Math.max(...windows.map((w) => w.length));
    const ids = new BigInt64Array(windows.length * seq).fill(BigInt(this.padId));
    const mask = new BigInt64Array(windows.length * seq);
    windows.forEach((w, r) => {
      w.forEach((id, c) => {
        ids[r * seq + c] = BigInt(id);
        mask[r * seq + c] = 1n;
      });
    });
    const feeds = {
      input_ids: new ort.Tensor("int64", ids, [windows.length, seq]),
      attention_mask: new ort.Tensor("int64", mask, [windows.length, seq]),
    };
    if (this.chunked) {
      const member = new BigInt64Array(texts.length * windows.length);
      owner.forEach((i, r) => { member[i * windows.length + r] = 1n; });
      feeds.windows = new ort.Tensor("int64", member, [texts.length, windows.length]);
    }
    const output = await this.session.run(feeds);
    return output[this.card.output].data;
  }

  /** The labels a row of probabilities gives, by the card's decision: the most probable one,
   * the second class where it reaches the decision threshold, or for a label-set model those
   * whose probability reaches their threshold. */
  labelsOf(row) {
    if (this.multiLabel) return this.classes.filter((_, j) => row[j] >= this.thresholds[j]);
    if (this.threshold !== null) return [this.classes[row[1] >= this.threshold ? 1 : 0]];
    let best = 0;
    for (let j = 1; j < row.length; j++) if (row[j] > row[best]) best = j;
    return [this.classes[best]];
  }
}

/**
 * The TF-IDF voter (tfidf.json) as bertprobe.export.TfidfVote computes it. The token pattern
 * (?u)\b\w\w+\b of Python's re, whose \w is a letter, a digit (any script) or "_", finds the
 * maximal runs of two or more such characters: in JavaScript [\p{L}\p{N}_]{2,} with the u flag
 * (JavaScript's own \w and \b are ASCII only).
 */
export class TfidfVote {
  constructor(record) {
    if (record.token_pattern !== "(?u)\\b\\w\\w+\\b" || record.norm !== "l2" || !record.lowercase) {
      throw new Error("tfidf.json: a voter this page cannot compute");
    }
    this.column = new Map(record.terms.map((term, j) => [term, j]));
    [this.minN, this.maxN] = record.ngram_range;
    this.sublinear = record.sublinear_tf;
    this.binary = record.link === "binary";
    this.idf = record.idf;
    this.coef = record.coef;
    this.intercept = record.intercept;
  }

  /** The logistic regression's scores for a text (one, or one a class). */
  scores(text) {
    const words = text.toLowerCase().match(/[\p{L}\p{N}_]{2,}/gu) ?? [];
    const counts = new Map();
    for (let n = this.minN; n <= this.maxN; n++) {
      for (let i = 0; i + n <= words.length; i++) {
        const j = this.column.get(words.slice(i, i + n).join(" "));
        if (j !== undefined) counts.set(j, (counts.get(j) ?? 0) + 1);
      }
    }
    const columns = [...counts.keys()].sort((a, b) => a - b); // ascending, as scikit-learn's
    const x = columns.map((j) => {
      const tf = counts.get(j);
      return (this.sublinear ? Math.log(tf) + 1 : tf) * this.idf[j];
    });
    const norm = Math.sqrt(x.reduce((s, v) => s + v * v, 0));
    const unit = norm > 0 ? x.map((v) => v / norm) : x;
    return this.coef.map((row, c) => {
      let z = 0;
      columns.forEach((j, k) => { z += row[j] * unit[k]; });
      return z + this.intercept[c];
    });
  }

  /** Probabilities, one array a text: [1 - s, s] with s = sigmoid(z), or a softmax. */
  predictProba(texts) {
    return texts.map((text) => {
      const z = this.scores(text);
      if (this.binary) {
        const positive = 1 / (1 + Math.exp(-z[0]));
        return [1 - positive, positive];
      }
      const top = Math.max(...z);
      const exp = z.map((v) => Math.exp(v - top));
      const sum = exp.reduce((s, v) => s + v, 0);
      return exp.map((v) => v / sum);
    });
  }
}
