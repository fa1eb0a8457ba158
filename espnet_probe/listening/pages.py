"""Templates of the listening-test pages (names end in .html, so Flask autoescapes them all)."""

STYLE = """
body { font-family: sans-serif; max-width: 40em; margin: 2em auto; padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.5em; }
.stimuli { display: grid; grid-template-columns: 2em 1fr; gap: .8em 1em; align-items: center;
           margin: 1.5em 0; }
.label { font-weight: bold; font-size: 1.5em; }
audio { width: 100%; }
button { font-size: 1.1em; padding: .6em 1.2em; margin-right: 1em; cursor: pointer; }
.progress { color: #555; }
.error { color: #a00; }
.small { font-size: .85em; color: #555; word-break: break-all; }
"""

PAGES = {
    "base.html": """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Speaker listening test</title>
<link rel="stylesheet" href="{{ url_for('style') }}">
</head><body>
{% block body %}{% endblock %}
</body></html>
""",
    "start.html": """{% extends "base.html" %}{% block body %}
<h1>Speaker listening test</h1>
<p>Each trial has three recordings: <b>A</b>, <b>B</b> and <b>X</b>. A and B are spoken by two
different people. X is spoken by one of them, but is a different sentence.</p>
<p>Listen to all three (as often as you like) and answer: is X spoken by <b>A's speaker</b> or
by <b>B's speaker</b>? Ignore what is said and how clear or distorted the sound is; judge only
whose voice it is. If you cannot tell, make your best guess.</p>
<p>There are {{ n_trials }} trials. Use headphones in a quiet place. You can stop at any time and
come back later with the same browser, or with the resume link shown on every trial page.</p>
{% if error %}<p class="error">{{ error }}</p>{% endif %}
<form method="post" action="{{ url_for('start') }}">
<label>Your name or initials: <input name="name" id="name" maxlength="{{ max_name }}" required
  value="{{ name }}"></label>
<button type="submit" id="start">Start</button>
</form>
{% endblock %}
""",
    "trial.html": """{% extends "base.html" %}{% block body %}
<p class="progress" id="progress">{{ position }} / {{ total }}</p>
<h1>Is X spoken by A's speaker or B's speaker?</h1>
<div class="stimuli">
{% for label, stimulus in stimuli %}
<span class="label">{{ label }}</span>
<audio controls preload="none" id="audio-{{ label }}"
  src="{{ url_for('audio', stimulus_id=stimulus) }}"></audio>
{% endfor %}
</div>
<form method="post" action="{{ url_for('answer') }}">
<input type="hidden" name="csrf" value="{{ csrf }}">
<input type="hidden" name="trial" value="{{ trial }}">
<button type="submit" name="choice" value="A" id="answer-A">X is speaker A</button>
<button type="submit" name="choice" value="B" id="answer-B">X is speaker B</button>
</form>
<p class="small">{{ name }}: to continue later on another device, open
<a href="{{ resume_url }}">{{ resume_url }}</a> (keep it private).</p>
{% endblock %}
""",
    "resume.html": """{% extends "base.html" %}{% block body %}
<h1>Welcome back, {{ name }}</h1>
<p>You have answered {{ answered }} of {{ total }} trials.</p>
<p><a href="{{ url_for('trial') }}" id="continue">Continue</a></p>
{% endblock %}
""",
    "done.html": """{% extends "base.html" %}{% block body %}
<h1 id="done">Thank you, {{ name }}!</h1>
<p class="progress">{{ total }} / {{ total }}</p>
<p>You have answered all trials. You can close this page.</p>
{% endblock %}
""",
    "message.html": """{% extends "base.html" %}{% block body %}
<h1>{{ title }}</h1>
<p class="error" id="reason">{{ reason }}</p>
<p><a href="{{ url_for('index') }}">Back to the test</a></p>
{% endblock %}
""",
}
