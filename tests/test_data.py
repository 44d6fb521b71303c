"""Reading labelled files: formats, headers, encodings, and the errors users see."""

from __future__ import annotations

import tracemalloc

import pytest

from bertprobe.core.errors import BadInputError
from bertprobe.data.files import iter_chunks, read_labelled, read_texts
from bertprobe.datasets import load_sst2, sst2_path


def test_sst2_splits_have_the_documented_sizes_and_binary_labels():
    sizes = {split: len(load_sst2(split)) for split in ("train", "dev", "test")}
    assert sizes == {"train": 6920, "dev": 872, "test": 1821}
    assert set(load_sst2("dev").labels) == {0, 1}


def test_tsv_without_header_reads_text_then_label(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text('he said " wow " , fine\t1\nbad\t0\n', encoding="utf-8")
    data = read_labelled(path)
    assert data.texts == ['he said " wow " , fine', "bad"]  # bare quotes stay in TSV
    assert data.labels == [1, 0]
    assert data.line_numbers == [1, 2]


def test_bom_and_crlf_are_handled(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_bytes("\ufeffgood film\t1\r\nbad film\t0\r\n".encode())
    data = read_labelled(path)
    assert data.texts == ["good film", "bad film"]
    assert data.labels == [1, 0]


def test_csv_with_header_columns_by_name_and_quoted_fields(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(
        'id,review,sentiment\n1,"fine, really\nfine",pos\n2,dull,neg\n', encoding="utf-8"
    )
    data = read_labelled(path, text_col="review", label_col="sentiment")
    assert data.texts == ["fine, really\nfine", "dull"]
    assert data.labels == ["pos", "neg"]
    assert data.line_numbers == [2, 4]  # the quoted newline makes row 2 span two lines


def test_header_is_detected_from_known_names(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("sentence\tlabel\nok\t1\nno\t0\n", encoding="utf-8")
    assert read_labelled(path).texts == ["ok", "no"]


def test_columns_by_index_and_string_labels(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("pos\tlovely\nneg\tawful\n", encoding="utf-8")
    data = read_labelled(path, text_col=1, label_col=0)
    assert data.texts == ["lovely", "awful"]
    assert data.labels == ["pos", "neg"]


def test_json_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "fine", "label": 1}\n\n{"text": "dull", "label": 0}\n')
    data = read_labelled(path)
    assert data.texts == ["fine", "dull"]
    assert data.labels == [1, 0]
    assert data.line_numbers == [1, 3]


def test_read_texts_takes_plain_lines_and_tables(tmp_path):
    plain = tmp_path / "texts.txt"
    plain.write_text("first one\nsecond, with a comma\n", encoding="utf-8")
    assert read_texts(plain).texts == ["first one", "second, with a comma"]
    assert read_texts(sst2_path("test")).texts[0] == "no movement , no yuks , not much of anything"


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        (b"", {}, "is empty"),
        (b"\n  \n", {}, "is empty"),
        (b"good\t1\n\t0\nfine\t1\n   \t1\n", {}, "empty text on lines 2, 4"),
        (b"good\t1\nbad\t\n", {}, "missing label on lines 2"),
        (b"good\t1\nca\xffd\t0\n", {}, r"line 2 is not valid UTF-8 \(byte 0xff at column 3\)"),
        (b"text\tlabel\ngood\t1\n", {"text_col": "sentense"}, "no column 'sentense'"),
        (b"good\t1\n", {"label_col": 5}, "label_col=5 is out of range"),
        (b"good\t1\nbad\n", {}, "too few columns on lines 2"),
    ],
)
def test_bad_files_say_what_and_where(tmp_path, content, kwargs, message):
    path = tmp_path / "bad.tsv"
    path.write_bytes(content)
    with pytest.raises(BadInputError, match=message) as info:
        read_labelled(path, **kwargs)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(BadInputError, match="no such file"):
        read_labelled(tmp_path / "nope.tsv")
    with pytest.raises(BadInputError, match="is a folder"):
        read_labelled(tmp_path)


def test_drop_empty_skips_and_counts(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("good\t1\n \t0\nbad\t0\n", encoding="utf-8")
    data = read_labelled(path, drop_empty=True)
    assert data.texts == ["good", "bad"]
    assert data.dropped_empty == 1


def test_long_lists_of_lines_are_shortened(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("good\t1\n" + "\t0\n" * 20, encoding="utf-8")
    with pytest.raises(BadInputError, match=r"2, 3, 4, 5, 6, 7, 8, 9, \.\.\. \(20 in all\)"):
        read_labelled(path)


def test_chunks_hold_the_same_rows_as_a_whole_read():
    whole = load_sst2("dev")
    chunks = list(iter_chunks(sst2_path("dev"), 100, want_labels=True))
    assert [len(c) for c in chunks] == [100] * 8 + [72]
    assert [t for c in chunks for t in c.texts] == whole.texts
    assert [y for c in chunks for y in c.labels] == whole.labels
    assert [n for c in chunks for n in c.line_numbers] == whole.line_numbers


def test_a_bad_row_stops_the_stream_at_its_chunk(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("good\t1\n" * 5 + "\t0\n" + "bad\t0\n" * 5, encoding="utf-8")
    stream = iter_chunks(path, 3, want_labels=True)
    assert len(next(stream)) == 3
    with pytest.raises(BadInputError, match="empty text on lines 6"):
        next(stream)


def test_reading_in_chunks_holds_one_chunk_not_the_file(tmp_path):
    path = tmp_path / "many.txt"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(60_000):
            fh.write(f"synthetic sentence number {i} with a few more words\n")
    tracemalloc.start()
    try:
        n = sum(len(c) for c in iter_chunks(path, 1000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 60_000
    # The file's texts as Python strings take about 6 MB; one chunk about 0.1 MB.
    assert peak < 1_500_000
