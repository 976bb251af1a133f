"""The election manifest (the reference's ``electionguard.manifest``): JSON and ``crypto_hash``.

Hashes follow the reference field by field (its ``hash_elems`` over strings, ints, nested hashes),
so that ``Manifest.crypto_hash()`` equals the reference's and so do the contest and selection
description hashes that every ballot carries. Enumerations are kept as their string values: the
reference hashes ``enum.name``, which equals the value for every member of these enums.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from gmpy2 import mpz

from compute.hashing import hash_elems

_T = TypeVar("_T")

SUPPORTED_VOTE_VARIATIONS = {"one_of_m", "approval", "majority", "n_of_m", "plurality", "super_majority"}


def _parse_datetime(s: str) -> datetime:
    try:
        return datetime.fromisoformat(s)
    except ValueError:
        from dateutil import parser  # the reference parses with dateutil; fall back to it for odd forms

        return parser.parse(s)


def iso_date_string(d: datetime) -> str:
    """As the reference's ``to_iso_date_string``: UTC if aware (naive stays as is), seconds, 'Z'."""
    u = d.astimezone(UTC).replace(microsecond=0) if d.tzinfo else d.replace(microsecond=0)
    return u.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class AnnotatedString:
    annotation: str = ""
    value: str = ""

    def crypto_hash(self) -> mpz:
        return hash_elems(self.annotation, self.value)

    def to_json(self) -> dict[str, Any]:
        return {"annotation": self.annotation, "value": self.value}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AnnotatedString:
        return cls(d.get("annotation", ""), d.get("value", ""))


@dataclass(frozen=True, slots=True)
class Language:
    value: str
    language: str = "en"

    def crypto_hash(self) -> mpz:
        return hash_elems(self.value, self.language)

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "language": self.language}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Language:
        return cls(d["value"], d.get("language", "en"))


@dataclass(frozen=True, slots=True)
class InternationalizedText:
    text: tuple[Language, ...] = ()

    def crypto_hash(self) -> mpz:
        return hash_elems(list(self.text))

    def to_json(self) -> dict[str, Any]:
        return {"text": [t.to_json() for t in self.text]}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> InternationalizedText:
        return cls(tuple(Language.from_json(t) for t in (d or {}).get("text") or []))


def _opt_text(d: dict[str, Any] | None) -> InternationalizedText | None:
    return None if d is None else InternationalizedText.from_json(d)


def _opt_json(x: Any) -> Any:
    return None if x is None else x.to_json()


def _opt_list(x: Sequence[_T] | None) -> list[_T] | None:
    return None if x is None else list(x)


@dataclass(frozen=True, slots=True)
class ContactInformation:
    address_line: tuple[str, ...] | None = None
    email: tuple[AnnotatedString, ...] | None = None
    phone: tuple[AnnotatedString, ...] | None = None
    name: str | None = None

    def crypto_hash(self) -> mpz:
        return hash_elems(
            self.name, _opt_list(self.address_line), _opt_list(self.email), _opt_list(self.phone)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "address_line": _opt_list(self.address_line),
            "email": None if self.email is None else [e.to_json() for e in self.email],
            "phone": None if self.phone is None else [e.to_json() for e in self.phone],
            "name": self.name,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> ContactInformation | None:
        if d is None:
            return None

        def ann(xs: list[Any] | None) -> tuple[AnnotatedString, ...] | None:
            return None if xs is None else tuple(AnnotatedString.from_json(x) for x in xs)

        al = d.get("address_line")
        return cls(None if al is None else tuple(al), ann(d.get("email")), ann(d.get("phone")), d.get("name"))


@dataclass(frozen=True, slots=True)
class GeopoliticalUnit:
    object_id: str
    name: str
    type: str
    contact_information: ContactInformation | None = None

    def crypto_hash(self) -> mpz:
        return hash_elems(self.object_id, self.name, self.type, self.contact_information)

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "name": self.name,
            "type": self.type,
            "contact_information": _opt_json(self.contact_information),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GeopoliticalUnit:
        return cls(
            d["object_id"], d["name"], d["type"], ContactInformation.from_json(d.get("contact_information"))
        )


@dataclass(frozen=True, slots=True)
class BallotStyle:
    object_id: str
    geopolitical_unit_ids: tuple[str, ...] | None = None
    party_ids: tuple[str, ...] | None = None
    image_uri: str | None = None

    def crypto_hash(self) -> mpz:
        return hash_elems(
            self.object_id, _opt_list(self.geopolitical_unit_ids), _opt_list(self.party_ids), self.image_uri
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "geopolitical_unit_ids": _opt_list(self.geopolitical_unit_ids),
            "party_ids": _opt_list(self.party_ids),
            "image_uri": self.image_uri,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BallotStyle:
        g, p = d.get("geopolitical_unit_ids"), d.get("party_ids")
        return cls(
            d["object_id"],
            None if g is None else tuple(g),
            None if p is None else tuple(p),
            d.get("image_uri"),
        )


@dataclass(frozen=True, slots=True)
class Party:
    object_id: str
    name: InternationalizedText = field(default_factory=InternationalizedText)
    abbreviation: str | None = None
    color: str | None = None
    logo_uri: str | None = None

    def crypto_hash(self) -> mpz:
        return hash_elems(self.object_id, self.name, self.abbreviation, self.color, self.logo_uri)

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "name": self.name.to_json(),
            "abbreviation": self.abbreviation,
            "color": self.color,
            "logo_uri": self.logo_uri,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Party:
        return cls(
            d["object_id"],
            InternationalizedText.from_json(d.get("name")),
            d.get("abbreviation"),
            d.get("color"),
            d.get("logo_uri"),
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    object_id: str
    name: InternationalizedText = field(default_factory=InternationalizedText)
    party_id: str | None = None
    image_uri: str | None = None
    is_write_in: bool | None = None

    def crypto_hash(self) -> mpz:
        return hash_elems(self.object_id, self.name, self.party_id, self.image_uri)

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "name": self.name.to_json(),
            "party_id": self.party_id,
            "image_uri": self.image_uri,
            "is_write_in": self.is_write_in,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Candidate:
        return cls(
            d["object_id"],
            InternationalizedText.from_json(d.get("name")),
            d.get("party_id"),
            d.get("image_uri"),
            d.get("is_write_in"),
        )


@dataclass(frozen=True, slots=True)
class SelectionDescription:
    object_id: str
    sequence_order: int
    candidate_id: str

    def crypto_hash(self) -> mpz:
        return hash_elems(self.object_id, self.sequence_order, self.candidate_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "sequence_order": self.sequence_order,
            "candidate_id": self.candidate_id,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SelectionDescription:
        return cls(d["object_id"], int(d["sequence_order"]), d["candidate_id"])


@dataclass(frozen=True, slots=True)
class ContestDescription:
    object_id: str
    sequence_order: int
    electoral_district_id: str
    vote_variation: str
    number_elected: int
    votes_allowed: int | None
    name: str
    ballot_selections: tuple[SelectionDescription, ...] = ()
    ballot_title: InternationalizedText | None = None
    ballot_subtitle: InternationalizedText | None = None
    # only written back if the source JSON had it (the reference's CandidateContestDescription field)
    primary_party_ids: tuple[str, ...] | None = None

    def crypto_hash(self) -> mpz:
        return hash_elems(
            self.object_id,
            self.sequence_order,
            self.electoral_district_id,
            self.vote_variation,
            self.ballot_title,
            self.ballot_subtitle,
            self.name,
            self.number_elected,
            self.votes_allowed,
            list(self.ballot_selections),
        )

    def is_valid(self) -> bool:
        n = len(self.ballot_selections)
        return (
            self.number_elected <= n
            and (self.votes_allowed is None or self.number_elected <= self.votes_allowed)
            and len({s.candidate_id for s in self.ballot_selections}) == n
            and len({s.object_id for s in self.ballot_selections}) == n
            and len({s.sequence_order for s in self.ballot_selections}) == n
            and self.vote_variation in SUPPORTED_VOTE_VARIATIONS
        )

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "object_id": self.object_id,
            "sequence_order": self.sequence_order,
            "electoral_district_id": self.electoral_district_id,
            "vote_variation": self.vote_variation,
            "number_elected": self.number_elected,
            "votes_allowed": self.votes_allowed,
            "name": self.name,
            "ballot_selections": [s.to_json() for s in self.ballot_selections],
            "ballot_title": _opt_json(self.ballot_title),
            "ballot_subtitle": _opt_json(self.ballot_subtitle),
        }
        if self.primary_party_ids is not None:
            d["primary_party_ids"] = list(self.primary_party_ids)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ContestDescription:
        pp = d.get("primary_party_ids")
        va = d.get("votes_allowed")
        return cls(
            object_id=d["object_id"],
            sequence_order=int(d["sequence_order"]),
            electoral_district_id=d["electoral_district_id"],
            vote_variation=d["vote_variation"],
            number_elected=int(d["number_elected"]),
            votes_allowed=None if va is None else int(va),
            name=d["name"],
            ballot_selections=tuple(
                SelectionDescription.from_json(s) for s in d.get("ballot_selections") or []
            ),
            ballot_title=_opt_text(d.get("ballot_title")),
            ballot_subtitle=_opt_text(d.get("ballot_subtitle")),
            primary_party_ids=None if pp is None else tuple(pp),
        )


@dataclass(frozen=True, slots=True)
class ContestDescriptionWithPlaceholders:
    """A contest with ``number_elected`` placeholder selections appended (as the reference builds it).

    Its ``crypto_hash`` ignores the placeholders, as the reference's does.
    """

    description: ContestDescription
    placeholder_selections: tuple[SelectionDescription, ...]
    description_hash: mpz

    @property
    def object_id(self) -> str:
        return self.description.object_id

    @property
    def sequence_order(self) -> int:
        return self.description.sequence_order

    @property
    def electoral_district_id(self) -> str:
        return self.description.electoral_district_id

    @property
    def number_elected(self) -> int:
        return self.description.number_elected

    @property
    def votes_allowed(self) -> int | None:
        return self.description.votes_allowed

    @property
    def ballot_selections(self) -> tuple[SelectionDescription, ...]:
        return self.description.ballot_selections

    @property
    def vote_variation(self) -> str:
        return self.description.vote_variation

    @property
    def name(self) -> str:
        return self.description.name

    @property
    def ballot_title(self) -> InternationalizedText | None:
        return self.description.ballot_title

    @property
    def ballot_subtitle(self) -> InternationalizedText | None:
        return self.description.ballot_subtitle

    def crypto_hash(self) -> mpz:
        return self.description_hash

    def is_valid(self) -> bool:
        return self.description.is_valid() and len(self.placeholder_selections) == self.number_elected

    def selection_for(self, selection_id: str) -> SelectionDescription | None:
        for s in (*self.ballot_selections, *self.placeholder_selections):
            if s.object_id == selection_id:
                return s
        return None


@dataclass(frozen=True, slots=True)
class Manifest:
    election_scope_id: str
    spec_version: str
    type: str
    start_date: datetime
    end_date: datetime
    geopolitical_units: tuple[GeopoliticalUnit, ...]
    parties: tuple[Party, ...]
    candidates: tuple[Candidate, ...]
    contests: tuple[ContestDescription, ...]
    ballot_styles: tuple[BallotStyle, ...]
    name: InternationalizedText | None = None
    contact_information: ContactInformation | None = None

    def crypto_hash(self) -> mpz:
        return hash_elems(
            self.election_scope_id,
            self.type,
            iso_date_string(self.start_date),
            iso_date_string(self.end_date),
            self.name,
            self.contact_information,
            list(self.geopolitical_units),
            list(self.parties),
            list(self.contests),
            list(self.ballot_styles),
        )

    def is_valid(self) -> bool:
        """The reference's ``Manifest.is_valid``: unique ids, references resolve, contests valid."""
        gp = {g.object_id for g in self.geopolitical_units}
        parties = {p.object_id for p in self.parties}
        ok = len(gp) == len(self.geopolitical_units)
        ok &= len({s.object_id for s in self.ballot_styles}) == len(self.ballot_styles)
        ok &= all(
            s.geopolitical_unit_ids is not None and set(s.geopolitical_unit_ids) <= gp
            for s in self.ballot_styles
        )
        ok &= len(parties) == len(self.parties)
        ok &= len({c.object_id for c in self.candidates}) == len(self.candidates)
        ok &= all(c.party_id is None or c.party_id in parties for c in self.candidates)
        ok &= len({c.object_id for c in self.contests}) == len(self.contests)
        ok &= len({c.sequence_order for c in self.contests}) == len(self.contests)
        ok &= all(c.is_valid() and c.electoral_district_id in gp for c in self.contests)
        ok &= all(set(c.primary_party_ids or ()) <= parties for c in self.contests)
        return bool(ok)

    def to_json(self) -> dict[str, Any]:
        return {
            "election_scope_id": self.election_scope_id,
            "spec_version": self.spec_version,
            "type": self.type,
            "start_date": self.start_date.isoformat(),
            "end_date": self.end_date.isoformat(),
            "geopolitical_units": [g.to_json() for g in self.geopolitical_units],
            "parties": [p.to_json() for p in self.parties],
            "candidates": [c.to_json() for c in self.candidates],
            "contests": [c.to_json() for c in self.contests],
            "ballot_styles": [s.to_json() for s in self.ballot_styles],
            "name": _opt_json(self.name),
            "contact_information": _opt_json(self.contact_information),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        return cls(
            election_scope_id=d["election_scope_id"],
            spec_version=d.get("spec_version", "1.0"),
            type=d["type"],
            start_date=_parse_datetime(d["start_date"]),
            end_date=_parse_datetime(d["end_date"]),
            geopolitical_units=tuple(
                GeopoliticalUnit.from_json(g) for g in d.get("geopolitical_units") or []
            ),
            parties=tuple(Party.from_json(p) for p in d.get("parties") or []),
            candidates=tuple(Candidate.from_json(c) for c in d.get("candidates") or []),
            contests=tuple(ContestDescription.from_json(c) for c in d.get("contests") or []),
            ballot_styles=tuple(BallotStyle.from_json(s) for s in d.get("ballot_styles") or []),
            name=_opt_text(d.get("name")),
            contact_information=ContactInformation.from_json(d.get("contact_information")),
        )


def placeholder_selections_for(contest: ContestDescription) -> tuple[SelectionDescription, ...]:
    """``number_elected`` placeholders after the highest sequence order, named as the reference names them."""
    top = max(s.sequence_order for s in contest.ballot_selections)
    out = []
    for i in range(contest.number_elected):
        seq = top + 1 + i
        base = f"{contest.object_id}-{seq}"
        out.append(SelectionDescription(f"{base}-placeholder", seq, f"{base}-candidate"))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class InternalManifest:
    """The reference's ``InternalManifest``: contests with placeholders, hashes computed once."""

    manifest: Manifest
    manifest_hash: mpz
    contests: tuple[ContestDescriptionWithPlaceholders, ...]
    # selection description hashes keyed by (contest id, selection id), placeholders included
    selection_hashes: dict[tuple[str, str], mpz]

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> InternalManifest:
        contests = []
        sel_hashes: dict[tuple[str, str], mpz] = {}
        for c in manifest.contests:
            ph = placeholder_selections_for(c)
            contests.append(ContestDescriptionWithPlaceholders(c, ph, c.crypto_hash()))
            for s in (*c.ballot_selections, *ph):
                sel_hashes[(c.object_id, s.object_id)] = s.crypto_hash()
        return cls(manifest, manifest.crypto_hash(), tuple(contests), sel_hashes)

    @property
    def geopolitical_units(self) -> tuple[GeopoliticalUnit, ...]:
        return self.manifest.geopolitical_units

    @property
    def ballot_styles(self) -> tuple[BallotStyle, ...]:
        return self.manifest.ballot_styles

    def get_ballot_style(self, style_id: str) -> BallotStyle:
        for s in self.manifest.ballot_styles:
            if s.object_id == style_id:
                return s
        raise KeyError(f"unknown ballot style {style_id!r}")

    def get_contests_for(self, style_id: str) -> list[ContestDescriptionWithPlaceholders]:
        style = self.get_ballot_style(style_id)
        if style.geopolitical_unit_ids is None:
            return []
        gp = set(style.geopolitical_unit_ids)
        return [c for c in self.contests if c.electoral_district_id in gp]

    def contest_for(self, contest_id: str) -> ContestDescriptionWithPlaceholders | None:
        for c in self.contests:
            if c.object_id == contest_id:
                return c
        return None


def build_simple_manifest(
    candidate_names: list[str],
    party_names: list[str] | None = None,
    max_choices: int = 1,
    election_name: str = "Election",
    election_scope_id: str | None = None,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
) -> Manifest:
    """A valid one-contest manifest for backends that only know a candidate list.

    ``party_names[i]`` (optional) is candidate i's party; ``max_choices`` seats are elected
    (``n_of_m`` if more than one, ``one_of_m`` otherwise). Each candidate's name is its candidate id
    and its selection id: the reference's manifest hash covers contests but not the candidate list,
    so the names must be in the selections for the election's hashes to commit to them (and the
    decrypted tally is then keyed by candidate name).
    """
    if not candidate_names:
        raise ValueError("at least one candidate")
    if len(set(candidate_names)) != len(candidate_names):
        raise ValueError("candidate names must be unique")
    if not 1 <= max_choices <= len(candidate_names):
        raise ValueError("max_choices must be between 1 and the number of candidates")
    if party_names is not None and len(party_names) != len(candidate_names):
        raise ValueError("party_names must give one party per candidate")
    start = start_date or datetime(2025, 1, 1, tzinfo=UTC)
    end = end_date or start
    party_ids: dict[str, str] = {}
    for p in party_names or []:
        party_ids.setdefault(p, f"party-{len(party_ids) + 1}")
    parties = tuple(Party(pid, InternationalizedText((Language(name),))) for name, pid in party_ids.items())
    candidates = tuple(
        Candidate(
            name,
            InternationalizedText((Language(name),)),
            party_ids[party_names[i]] if party_names else None,
        )
        for i, name in enumerate(candidate_names)
    )
    selections = tuple(SelectionDescription(c.object_id, i, c.object_id) for i, c in enumerate(candidates))
    contest = ContestDescription(
        object_id="contest-1",
        sequence_order=0,
        electoral_district_id="district-1",
        vote_variation="n_of_m" if max_choices > 1 else "one_of_m",
        number_elected=max_choices,
        votes_allowed=max_choices,
        name=election_name,
        ballot_selections=selections,
        ballot_title=InternationalizedText((Language(election_name),)),
    )
    return Manifest(
        election_scope_id=election_scope_id
        or "election-" + "".join(ch if ch.isalnum() else "-" for ch in election_name.lower()),
        spec_version="1.0",
        type="general",
        start_date=start,
        end_date=end,
        geopolitical_units=(GeopoliticalUnit("district-1", "District", "unknown"),),
        parties=parties,
        candidates=candidates,
        contests=(contest,),
        ballot_styles=(BallotStyle("ballot-style-1", ("district-1",)),),
        name=InternationalizedText((Language(election_name),)),
    )
