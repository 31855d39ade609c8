"""participants.tsv validated on read: one line naming the line and column, exit 65."""

from __future__ import annotations

import numpy as np
import pytest

from bids_mdd.bids.participants import read_participants
from bids_mdd.errors import BidsMddError

pytestmark = pytest.mark.unit  # make test-fast

HEADER = "participant_id\tgroup\tage\tsex\n"


def _read(tmp_path, body: str, header: str = HEADER):
    path = tmp_path / "participants.tsv"
    path.write_text(header + body, encoding="utf-8")
    return read_participants(path), path


def test_good_table_numbers_words_and_missing(tmp_path) -> None:
    table, _ = _read(tmp_path, "sub-01\tMDD\t59\tF\nsub-02\tHC\tn/a\tM\n02b\tHC\t40.5\tn/a\n")
    assert list(table.index) == ["01", "02", "02b"]
    assert table["age"].dtype == float and np.isnan(table.loc["02", "age"])
    assert table.loc["02b", "age"] == 40.5 and table.loc["01", "group"] == "MDD"
    assert table["sex"].isna().tolist() == [False, False, True]


@pytest.mark.parametrize(("body", "message"), [
    ("sub-01\tMDD\t59\tF\nsub-02\tHC\t40\tM\nsub-01\tHC\t33\tM\n",
     r"participants.tsv lines 2, 4: participant_id sub-01 appears 2 times; keep one row per "
     r"participant"),
    ("sub-01\tMDD\t59\tF\nsub-02\tHC\t40\n",
     r"participants.tsv line 3: 3 tab-separated field\(s\), the header has 4; fix the row"),
    ("sub-01\tMDD\t59\tF\nsub-02\tHC\t40\tM\textra\n",
     r"participants.tsv line 3: 5 tab-separated field\(s\), the header has 4"),
    ("sub-01\tMDD\t59\tF\nsub-02\tHC\tfifty-nine\tM\nsub-03\tHC\t61\tF\n",
     r"participants.tsv line 3: column 'age' holds numbers, but 'fifty-nine' is not one; write "
     r"a number or n/a"),
    ("sub-01\tMDD\t59\tF\nn/a\tHC\t40\tM\n",
     r"participants.tsv line 3: participant_id is empty"),
])
def test_broken_tables_name_line_and_column(tmp_path, body, message) -> None:
    with pytest.raises(BidsMddError, match=message) as error:
        _read(tmp_path, body)
    assert error.value.exit_code == 65 and "\n" not in str(error.value)


def test_a_column_named_twice_is_refused(tmp_path) -> None:
    """pandas would read the second 'group' as 'group.1' and the first would be used."""
    with pytest.raises(BidsMddError, match=r"participants.tsv line 1: the header names a column "
                       r"more than once \('group' is fields 2, 5\); keep one column per name"
                       ) as error:
        _read(tmp_path, "sub-01\tMDD\t59\tF\tHC\n", header="participant_id\tgroup\tage\tsex"
                                                          "\tgroup\n")
    assert error.value.exit_code == 65


def test_no_participant_id_column_and_empty_file(tmp_path) -> None:
    with pytest.raises(BidsMddError, match="has no participant_id column \\(columns: "
                                           "subject, group\\)") as error:
        _read(tmp_path, "01\tMDD\n", header="subject\tgroup\n")
    assert error.value.exit_code == 65
    with pytest.raises(BidsMddError, match="participants.tsv: empty"):
        _read(tmp_path, "", header="")
