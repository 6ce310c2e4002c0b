"""DimeRec Explorer: `streamlit run app/main.py`. This file only builds the navigation."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run` puts app/ on the path, not the project
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402


def run() -> None:
    st.set_page_config(page_title="DimeRec Explorer", page_icon="🧭", layout="wide")
    # URL paths follow the file names (/denoising, /what_if, ...), so links and AppTest.switch_page agree.
    pages = [
        st.Page("app_pages/tour.py", title="Tour", icon=":material/explore:", default=True),
        st.Page("app_pages/denoising.py", title="Denoising on the sphere", icon=":material/public:"),
        st.Page("app_pages/interests.py", title="Interests", icon=":material/hub:"),
        st.Page("app_pages/training.py", title="Training", icon=":material/show_chart:"),
        st.Page("app_pages/steps.py", title="Steps", icon=":material/stairs:"),
        st.Page("app_pages/sample_or_mean.py", title="Sample or mean?", icon=":material/casino:"),
        st.Page("app_pages/what_if.py", title="What if", icon=":material/edit:"),
        st.Page("app_pages/results.py", title="Paper vs ours", icon=":material/table_chart:"),
    ]
    st.navigation(pages).run()


run()
