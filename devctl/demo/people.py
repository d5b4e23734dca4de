"""Made-up DevConnect members and chat lines for `devctl seed demo`.

Everything comes from a ``random.Random`` the caller seeds, so a run is reproducible
from its seed. Emails are on ``example.com`` (RFC 2606: reserved, never a real
mailbox) and carry the run's tag, so the users of two runs never collide and a
run's users are recognisable (``ada.lovelace.k3f9.7@example.com``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

EMAIL_DOMAIN = "example.com"

FIRST_NAMES = (
    "Aarav", "Aisha", "Alejandro", "Amara", "Ananya", "Arjun", "Astrid", "Bilal", "Camila",
    "Chen", "Chiara", "Daniel", "Dmitri", "Elena", "Emeka", "Fatima", "Felix", "Freya",
    "Gabriel", "Hana", "Hiroshi", "Ines", "Isabela", "Ivan", "Jamal", "Javier", "Kavya",
    "Kenji", "Lars", "Leila", "Lucas", "Maya", "Mei", "Mateo", "Nadia", "Nikhil", "Noah",
    "Olga", "Omar", "Priya", "Rafael", "Rohan", "Sakura", "Samuel", "Sofia", "Tariq",
    "Thandiwe", "Valentina", "Wei", "Yusuf", "Zara", "Zoltan",
)  # fmt: skip
LAST_NAMES = (
    "Adeyemi", "Andersson", "Bianchi", "Chowdhury", "Costa", "Dubois", "Eriksen", "Fernandes",
    "Garcia", "Gupta", "Haddad", "Ivanova", "Jensen", "Kim", "Kowalski", "Kumar", "Larsen",
    "Lopez", "Mehta", "Moreau", "Nakamura", "Nguyen", "Novak", "Okafor", "Olsen", "Patel",
    "Petrov", "Quinn", "Rossi", "Sato", "Schmidt", "Silva", "Singh", "Tanaka", "Urban",
    "Varga", "Wang", "Williams", "Yamamoto", "Zhang",
)  # fmt: skip
SKILLS = (
    "Python", "Go", "Rust", "TypeScript", "JavaScript", "React", "Vue", "Node.js", "Django",
    "FastAPI", "Kafka", "Redis", "PostgreSQL", "MongoDB", "Docker", "Kubernetes", "Terraform",
    "AWS", "GCP", "GraphQL", "Java", "Kotlin", "Swift", "C++", "Elixir", "Machine learning",
    "Data engineering", "Security", "DevOps", "UX design",
)  # fmt: skip
ROLES = (
    "backend engineer", "frontend developer", "full-stack developer", "SRE", "data engineer",
    "mobile developer", "platform engineer", "ML engineer", "security engineer",
    "engineering student",
)  # fmt: skip
INTERESTS = (
    "open source", "distributed systems", "developer tooling", "hackathons", "clean APIs",
    "performance work", "mentoring", "side projects", "functional programming", "accessibility",
)  # fmt: skip
GENDERS = ("male", "female", "others")

OPENERS = (
    "Hi {name}! Thanks for connecting.",
    "Hey {name}, great to meet you here.",
    "Hello {name}! I saw you work with {skill}.",
)
LINES = (
    "Are you going to the meetup next week?",
    "I'm hacking on a {skill} side project, want to pair on it?",
    "How long have you been doing {skill}?",
    "Any tips for getting started with {skill}?",
    "That talk on event-driven systems was great.",
    "We're hiring, by the way. Interested?",
    "Just pushed a fix for that flaky test, finally.",
    "Coffee chat sometime this week?",
    "Did you try the new release? The startup time is way better.",
    "I'd love your review on my PR if you have a minute.",
    "Sounds good!",
    "Haha, exactly.",
    "Let me check and get back to you.",
    "Thanks, that helped a lot!",
    "Which editor do you use?",
    "Our team moved everything to {skill} last quarter.",
)


@dataclass(frozen=True)
class Person:
    """A demo member as the sign-up and profile edit send it."""

    first_name: str
    last_name: str
    email: str
    age: int
    gender: str
    skills: list[str] = field(default_factory=list)
    about: str = ""

    def signup_body(self, password: str) -> dict[str, Any]:
        return {
            "firstName": self.first_name,
            "lastName": self.last_name,
            "emailId": self.email,
            "password": password,
        }

    def profile_body(self) -> dict[str, Any]:
        """The seven fields the web client's edit page sends (``PATCH /user/{id}``)."""
        return {
            "firstName": self.first_name,
            "lastName": self.last_name,
            "age": str(self.age),
            "gender": self.gender,
            "photoUrl": "",
            "about": self.about,
            "skills": self.skills,
        }


def make_people(count: int, tag: str, rng: random.Random) -> list[Person]:
    """``count`` members with distinct emails (``first.last.<tag>.<n>@example.com``)."""
    people = []
    for index in range(count):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        skills = rng.sample(SKILLS, rng.randint(2, 5))
        role = rng.choice(ROLES)
        years = rng.randint(1, 15)
        about = (
            f"{role.capitalize()} with {years} year{'s' if years > 1 else ''} of "
            f"{skills[0]}. Into {rng.choice(INTERESTS)} and {rng.choice(INTERESTS)}."
        )
        email = f"{first}.{last}.{tag}.{index + 1}@{EMAIL_DOMAIN}".lower()
        people.append(
            Person(
                first_name=first,
                last_name=last,
                email=email,
                age=rng.randint(19, 58),
                gender=rng.choice(GENDERS),
                skills=skills,
                about=about,
            )
        )
    return people


def chat_line(rng: random.Random, to: Person, first: bool) -> str:
    """A line of chat to ``to``; ``first``: the opener of a conversation."""
    template = rng.choice(OPENERS if first else LINES)
    return template.format(name=to.first_name, skill=rng.choice(to.skills))
