/* The probe's reports: a table per spec section for a terminal, JSON for
 * machines, and one HTML page with no external assets for people. Every
 * string a server sent is escaped for the format it lands in.
 */
#include <stdio.h>
#include <string.h>

#include "bulwark/util.h"
#include "cli/common.h"
#include "cli/probe_int.h"

/* The sections in the order their first case ran. */
static size_t
sections(const struct probe *p, const char **out, size_t cap)
{
	size_t i, j, n = 0;

	for (i = 0; i < p->n; i++) {
		for (j = 0; j < n; j++) {
			if (strcmp(out[j], p->cases[i].section) == 0)
				break;
		}
		if (j == n && n < cap)
			out[n++] = p->cases[i].section;
	}
	return n;
}

static void
count(const struct probe *p, const char *section, size_t c[P_VERDICTS])
{
	size_t i;

	memset(c, 0, sizeof(size_t) * P_VERDICTS);
	for (i = 0; i < p->n; i++) {
		if (section == NULL ||
		    strcmp(p->cases[i].section, section) == 0)
			c[p->cases[i].verdict]++;
	}
}

int
probe_report(const struct probe *p, int json, const char *html)
{
	size_t c[P_VERDICTS];
	FILE *f;

	if (json ? probe_report_json(p, stdout) != 0
		 : (probe_report_text(p, stdout), ferror(stdout) != 0))
		return BW_EXIT_FATAL;
	if (html != NULL && ((f = fopen(html, "w")) == NULL ||
			     probe_report_html(p, f) != 0 || fclose(f) != 0)) {
		bw_cli_fatal("cannot write %s", html);
		return BW_EXIT_FATAL;
	}
	count(p, NULL, c);
	return c[P_FAIL] > 0 || (p->strict && c[P_DEVIATION] > 0)
		       ? BW_EXIT_FATAL
		       : BW_EXIT_OK;
}

void
probe_report_text(const struct probe *p, FILE *f)
{
	const char *sec[64];
	size_t ns = sections(p, sec, 64), i, c[P_VERDICTS];

	fprintf(f, "\n%s conformance of %s:%u\n\n", p->proto, p->host, p->port);
	fprintf(f, "%-28s %5s %5s %9s %5s\n", "section", "PASS", "FAIL",
		"DEVIATION", "SKIP");
	for (i = 0; i < ns; i++) {
		count(p, sec[i], c);
		fprintf(f, "%-28s %5zu %5zu %9zu %5zu\n", sec[i], c[P_PASS],
			c[P_FAIL], c[P_DEVIATION], c[P_SKIP]);
	}
	count(p, NULL, c);
	fprintf(f, "%-28s %5zu %5zu %9zu %5zu\n\n", "total", c[P_PASS],
		c[P_FAIL], c[P_DEVIATION], c[P_SKIP]);
	for (i = 0; i < p->n; i++) {
		const struct probe_case *k = &p->cases[i];

		if (k->verdict == P_FAIL || k->verdict == P_DEVIATION)
			fprintf(f, "%-9s %s (%s: %s)\n          %s\n",
				probe_verdict_name(k->verdict), k->id,
				k->section, k->clause, k->note);
	}
}

/* Writes the code point at u (NUL-terminated text) as it is when it is
 * printable UTF-8 (a newline and a tab included), else bad (one byte
 * taken); returns the bytes taken. */
static size_t
utf8_or_fffd(FILE *f, const unsigned char *u, const char *bad)
{
	uint32_t cp;
	size_t n = *u < 0x80 ? 1 : bw_utf8_seq(u, &cp);

	if (n == 0 || (*u < 0x20 && *u != '\n' && *u != '\t') || *u == 0x7f ||
	    (n > 1 && cp < 0xa0)) {
		fputs(bad, f); /* not UTF-8, C0 but a line's, DEL, C1 */
		return 1;
	}
	fwrite(u, 1, n, f);
	return n;
}

static void
json_str(FILE *f, const char *s)
{
	const unsigned char *u = (const unsigned char *)s;

	fputc('"', f);
	for (; s != NULL && *u; u++) {
		if (*u == '"' || *u == '\\')
			fprintf(f, "\\%c", *u);
		else if (*u == '\n')
			fputs("\\n", f);
		else if (*u < 0x20)
			fprintf(f, "\\u%04x", *u);
		else
			u += utf8_or_fffd(f, u, "\\ufffd") - 1;
	}
	fputc('"', f);
}

int
probe_report_json(const struct probe *p, FILE *f)
{
	size_t i, c[P_VERDICTS];

	count(p, NULL, c);
	fprintf(f, "{\"protocol\": ");
	json_str(f, p->proto);
	fprintf(f, ", \"server\": \"%s:%u\", \"run\": \"%s\",\n", p->host,
		p->port, p->tag);
	fprintf(f,
		" \"summary\": {\"pass\": %zu, \"fail\": %zu, "
		"\"deviation\": %zu, \"skip\": %zu},\n \"cases\": [",
		c[P_PASS], c[P_FAIL], c[P_DEVIATION], c[P_SKIP]);
	for (i = 0; i < p->n; i++) {
		const struct probe_case *k = &p->cases[i];

		fprintf(f, "%s\n  {\"id\": ", i ? "," : "");
		json_str(f, k->id);
		fprintf(f, ", \"section\": ");
		json_str(f, k->section);
		fprintf(f, ", \"clause\": ");
		json_str(f, k->clause);
		fprintf(f, ", \"verdict\": \"%s\", \"hostile\": %s, \"note\": ",
			probe_verdict_name(k->verdict),
			k->flags & P_HOSTILE ? "true" : "false");
		json_str(f, k->note);
		fprintf(f, ", \"transcript\": ");
		json_str(f, k->transcript != NULL ? k->transcript : "");
		fputc('}', f);
	}
	fprintf(f, "\n ]}\n");
	return ferror(f) ? -1 : 0;
}

static void
html_str(FILE *f, const char *s)
{
	const unsigned char *u = (const unsigned char *)s;

	for (; s != NULL && *u; u++) {
		switch (*u) {
		case '<':
			fputs("&lt;", f);
			break;
		case '>':
			fputs("&gt;", f);
			break;
		case '&':
			fputs("&amp;", f);
			break;
		case '"':
			fputs("&quot;", f);
			break;
		default:
			u += utf8_or_fffd(f, u, "&#xfffd;") - 1;
		}
	}
}

static const char STYLE[] =
	"body{font-family:sans-serif;margin:2em;max-width:70em}"
	"table{border-collapse:collapse}td,th{border:1px solid #ccc;"
	"padding:.2em .5em;text-align:left;vertical-align:top}"
	".PASS{background:#dfd}.FAIL{background:#fcc}"
	".DEVIATION{background:#ffd}.SKIP{background:#eee}"
	"pre{margin:0;white-space:pre-wrap;font-size:85%}";

int
probe_report_html(const struct probe *p, FILE *f)
{
	const char *sec[64];
	size_t ns = sections(p, sec, 64), i, j, c[P_VERDICTS];

	fprintf(f, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
		   "<title>");
	html_str(f, p->proto);
	fprintf(f,
		" conformance of %s:%u</title><style>%s</style></head>"
		"<body>\n<h1>",
		p->host, p->port, STYLE);
	html_str(f, p->proto);
	fprintf(f, " conformance of %s:%u</h1>\n", p->host, p->port);
	count(p, NULL, c);
	fprintf(f,
		"<p class=\"summary\">%zu passed, %zu failed, %zu deviations, "
		"%zu skipped (run %s)</p>\n",
		c[P_PASS], c[P_FAIL], c[P_DEVIATION], c[P_SKIP], p->tag);
	for (i = 0; i < ns; i++) {
		fprintf(f, "<h2>");
		html_str(f, sec[i]);
		fprintf(f, "</h2>\n<table><tr><th>case</th><th>clause</th>"
			   "<th>verdict</th><th>found</th></tr>\n");
		for (j = 0; j < p->n; j++) {
			const struct probe_case *k = &p->cases[j];

			if (strcmp(k->section, sec[i]) != 0)
				continue;
			fprintf(f, "<tr><td>");
			html_str(f, k->id);
			fprintf(f, "</td><td>");
			html_str(f, k->clause);
			fprintf(f, "</td><td class=\"%s\">%s</td><td>",
				probe_verdict_name(k->verdict),
				probe_verdict_name(k->verdict));
			html_str(f, k->note);
			if (k->transcript != NULL) {
				fprintf(f, "<details><summary>exchange"
					   "</summary><pre>");
				html_str(f, k->transcript);
				fprintf(f, "</pre></details>");
			}
			fprintf(f, "</td></tr>\n");
		}
		fprintf(f, "</table>\n");
	}
	fprintf(f, "</body></html>\n");
	return ferror(f) ? -1 : 0;
}
