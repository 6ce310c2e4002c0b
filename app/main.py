"""DimeRec Explorer: `streamlit run app/main.py`. This file only builds the navigation."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run` puts app/ on the path, not the project
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402


def run() -> None:
    st.set_page_config(page_title="DimeRec Explorer", page_icon="🧭", layout="wide")
    pages = [
        st.Page("app_pages/tour.py", title="Tour", icon=":material/explore:", default=True),
        st.Page("app_pages/denoising.py", title="Denoising on the sphere", icon=":material/public:", url_path="denoising"),
        st.Page("app_pages/interests.py", title="Interests", icon=":material/hub:", url_path="interests"),
        st.Page("app_pages/training.py", title="Training", icon=":material/show_chart:", url_path="training"),
        st.Page("app_pages/steps.py", title="Steps", icon=":material/stairs:", url_path="steps"),
        st.Page("app_pages/what_if.py", title="What if", icon=":material/edit:", url_path="what-if"),
    ]
    st.navigation(pages).run()


run()
