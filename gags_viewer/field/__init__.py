"""The language field and the on-disk formats that hold one."""

from gags_viewer.field.language_field import ClipSpec, FieldMetadata, LanguageField

__all__ = ["ClipSpec", "FieldMetadata", "LanguageField"]
