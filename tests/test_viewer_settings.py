"""What the query and negatives boxes become: phrases split on ';', repeats dropped."""

from gags_viewer.viewer.settings import ViewSettings, split_phrases


def test_repeated_phrases_are_one_query_whatever_their_case_and_spacing():
    assert split_phrases("lamp; LAMP;  Lamp ;red   cube; red cube") == ["lamp", "red cube"]
    settings = ViewSettings(queries_text="Lamp; lamp; mug")
    assert settings.queries == ["Lamp", "mug"] and len(settings.query_colors()) == 2
